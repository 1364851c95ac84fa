"""Train a small network on MTT's triple (images_best.pt, labels_best.pt, lr_best.pt) with torch alone."""
import sys

import torch
import torch.nn.functional as F

folder, epochs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300
images = torch.load(f"{folder}/images_best.pt")              # (N, C, H, W), normalised as the networks see them
labels = torch.load(f"{folder}/labels_best.pt")              # (N,) classes, or (N, K) learned logits
lr = float(torch.load(f"{folder}/lr_best.pt"))               # the learned learning rate
classes = labels.shape[1] if labels.dim() == 2 else int(labels.max()) + 1
net = torch.nn.Sequential(torch.nn.Conv2d(images.shape[1], 32, 3, padding=1), torch.nn.GroupNorm(32, 32),
                          torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(512, classes))
opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
for _ in range(epochs):
    logits = net(images)
    loss = (-(labels.softmax(1) * logits.log_softmax(1)).sum(1).mean() if labels.dim() == 2
            else F.cross_entropy(logits, labels))
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"trained on {len(images)} images for {epochs} epochs at lr {lr:.4g}: final loss {loss.item():.4f}")
