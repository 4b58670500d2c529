"""Whether one gradient's bits depend on torch's thread count (and, run under another
``MKL_CBWR``, on the BLAS code path): the Byzantine benchmark's MLP (784-256-10) on one batch
of 32 random images, its flat gradient digested per thread count.

    python scripts/check_gradient_bits.py
    MKL_CBWR=COMPATIBLE python scripts/check_gradient_bits.py   # MKL's portable code path

Equal digests across thread counts and code paths would mean a cell's bits cannot change
with them; the benchmark records the workers' thread count and the CPU either way.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform

import torch
from torch import nn


def gradient_digest(threads: int) -> str:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2))
    nn.functional.cross_entropy(model(x), y).backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    return hashlib.blake2b(grad.numpy().tobytes(), digest_size=8).hexdigest()


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"MKL_CBWR={os.environ.get('MKL_CBWR', '')!r}")
    for threads in (1, 2, 4):
        print(f"threads {threads}: gradient digest {gradient_digest(threads)}")


if __name__ == "__main__":
    main()
