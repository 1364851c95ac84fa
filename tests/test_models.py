"""The model factory, parametrised over the registry (the timm pattern)."""

import pytest
import torch

from ddtoolbox.errors import UsageError
from ddtoolbox.models import FlatModel, create_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 64), (3, 128)])
def test_every_model_builds_and_runs(name, channels, size):
    if name == "ConvNetD5" and size < 64 or name == "ConvNetD4" and size < 32:
        pytest.skip("too deep for this size")
    torch.manual_seed(0)
    net = create_model(name, channels, 10, size, width=8)
    out = net(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)


def test_parameter_counts_match_the_literature():
    # the references' counts: ConvNet-3 on 32 px / 10 classes 320,010; ConvNetD5 on 128 px 615,690
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(create_model("ConvNet", 3, 10, 32)) == 320_010
    assert count(create_model("ConvNetD5", 3, 10, 128)) == 615_690
    assert create_model("ConvNet", 1, 10, 28).feature_shape == (128, 4, 4)  # 28 px padded to 32


def test_flat_model_matches_module():
    torch.manual_seed(0)
    net = create_model("ConvNet", 1, 10, 28, width=4)
    flat = FlatModel(net)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(flat(flat.flatten(), x), net(x))
    with pytest.raises(UsageError, match="entries"):
        flat(torch.zeros(5), x)


def test_batchnorm_student_is_refused():
    with pytest.raises(UsageError, match="running statistics"):
        FlatModel(create_model("ConvNet", 1, 10, 28, width=4, norm="batchnorm"))


def test_unknown_model_and_options():
    with pytest.raises(UsageError, match="unknown model 'ResNet9000'.*ConvNet"):
        create_model("ResNet9000", 3, 10, 32)
    with pytest.raises(UsageError, match="norm"):
        create_model("ConvNet", 3, 10, 32, norm="fancy")
    with pytest.raises(UsageError, match="too deep"):
        create_model("ConvNet", 3, 10, 8, depth=5)


def test_load_flat_copies_the_vector_so_training_never_writes_into_it():
    from ddtoolbox.models import create_model, load_flat

    net = create_model("ConvNet", 1, 4, (16, 16), width=4)
    theta = torch.randn(sum(p.numel() for p in net.parameters()))
    kept = theta.clone()
    load_flat(net, theta)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert torch.equal(theta, kept)
