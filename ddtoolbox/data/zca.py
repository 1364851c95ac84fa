"""ZCA whitening of a dataset (``--zca``), with Kornia's ``ZCAWhitening``.

MTT, FTD and DATM whiten CIFAR-10/100 and Tiny ImageNet (never the ImageNet subsets): after the
usual normalisation, every image is flattened to a vector ``x`` of ``D = C * H * W`` numbers and
mapped to ``(x - mu) T`` with ``T = U diag(1 / sqrt(S + eps)) U^T``, where ``mu`` is the training
set's mean vector and ``U diag(S) U^T`` its (unbiased) covariance; ``eps = 0.1``. The transform is
fitted on the training split only and applied to the training and the test images alike, so the
networks never see an un-whitened image and evaluation never peeks at the test set. With ``eps``
the whitened training data has covariance ``U diag(S / (S + eps)) U^T``: the identity along every
direction whose variance is well above ``eps``, less along the faint ones.

The transform is a :class:`kornia.enhance.ZCAWhitening` (``eps=0.1, compute_inv=True``), so applying
and inverting it is Kornia's code. Only the fit is done here rather than by ``ZCAWhitening.fit``:
Kornia's fit centres a float copy of the whole ``(N, D)`` training matrix at once (for CIFAR-10
another 600 MB in float32), while :func:`fit_zca` accumulates the mean and the covariance in
float64 over chunks of images, so the extra memory is one ``D x D`` float64 matrix (75 MB for
32 x 32 RGB) plus a chunk. The formula is Kornia's (``zca_mean``), and a test checks the two fits
agree.

Synthetic images of a whitened run live in whitened space; pictures of them are made after
:func:`unwhiten` (the inverse transform), then the usual de-normalisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddtoolbox.errors import UsageError

#: the references' ``ZCAWhitening(eps=0.1)``
EPS = 0.1
#: images per chunk when fitting and applying (bounds the temporary memory)
CHUNK = 2048
#: largest feature count ``D`` whitened: the covariance is ``D x D`` float64 (12288: 64 x 64 RGB, 1.2 GB)
MAX_FEATURES = 12288


def _check(images: Tensor) -> int:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"ZCA expects float images (N, C, H, W), got {tuple(images.shape)} {images.dtype}")
    features = images[0].numel()
    if features > MAX_FEATURES:
        c, h, w = images.shape[1:]
        gb = features ** 2 * 8 / 1e9
        raise UsageError(f"--zca on {c}x{h}x{w} images needs a {features} x {features} covariance ({gb:.1f} GB); "
                         f"ZCA whitening is for small images such as CIFAR's 32 px (at most {MAX_FEATURES} numbers "
                         f"per image): drop --zca")
    if len(images) < 2:
        raise UsageError("--zca needs at least two training images to estimate a covariance")
    return features


def fit_zca(images: Tensor, eps: float = EPS, chunk: int = CHUNK):
    """A fitted :class:`kornia.enhance.ZCAWhitening` (``compute_inv=True``) for ``images`` (N, C, H, W).

    The mean and the unbiased covariance are accumulated in float64, chunk by chunk (two passes);
    the eigendecomposition is done in float64; the fitted mean and matrices are stored in float32
    on the CPU, as Kornia would store a float32 fit.
    """
    from kornia.enhance import ZCAWhitening

    features = _check(images)
    n = len(images)
    flat = images.reshape(n, features)
    total = torch.zeros(features, dtype=torch.float64)
    for start in range(0, n, chunk):
        total += flat[start:start + chunk].to(torch.float64).sum(0)
    mean = total / n
    cov = torch.zeros(features, features, dtype=torch.float64)
    for start in range(0, n, chunk):
        centred = flat[start:start + chunk].to(torch.float64) - mean
        cov.addmm_(centred.t(), centred)
    cov /= n - 1
    # Kornia takes an SVD of the covariance; for a symmetric positive semi-definite matrix the
    # symmetric eigendecomposition gives the same U and S (up to the order and signs of the
    # columns, which T does not depend on) in a fraction of the time.
    s, u = torch.linalg.eigh(cov)
    s = s.clamp_(min=0)
    transform = u @ (torch.rsqrt(s + eps)[:, None] * u.t())
    inverse = u @ (torch.sqrt(s + eps)[:, None] * u.t())
    zca = ZCAWhitening(eps=float(eps), compute_inv=True)
    zca.mean_vector = mean.view(1, features).to(torch.float32)
    zca.transform_matrix = transform.to(torch.float32)
    zca.transform_inv = inverse.to(torch.float32)
    zca.fitted = True
    return zca


def _apply(fn, images: Tensor, chunk: int) -> Tensor:
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        out[start:start + chunk] = fn(images[start:start + chunk])
    return out


def whiten(zca, images: Tensor, chunk: int = CHUNK) -> Tensor:
    """``images`` whitened by ``zca`` (Kornia's forward), chunk by chunk; a new tensor."""
    zca = zca.to(images.device)
    with torch.no_grad():
        return _apply(zca, images, chunk)


def unwhiten(zca, images: Tensor, chunk: int = CHUNK) -> Tensor:
    """The inverse transform (Kornia's ``inverse_transform``): back to plain normalised images."""
    zca = zca.to(images.device)
    with torch.no_grad():
        return _apply(zca.inverse_transform, images.detach(), chunk)
