#!/usr/bin/env python3
"""Builds the demonstration dataset shipped in assets/demo/ from Fashion-MNIST (MIT license).

  python3 scripts/make_demo_data.py [--src /usr/share/datasets/fashion-mnist] [--out assets/demo]
  python3 scripts/make_demo_data.py --upstream DIR
      writes the *upstream* classes (all 30 000 training and 5 000 test images of them) as
      DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, the data the shipped checkpoint was
      pre-trained on (not shipped; see assets/demo/README.md for the `bitgrad pretrain` command).

Input: the four gzipped IDX files of Debian's `dataset-fashion-mnist` package (the same files as
github.com/zalandoresearch/fashion-mnist). Output, in the same IDX format (gzipped), for the five
*downstream* classes 3, 4, 6, 8, 9 (Dress, Coat, Shirt, Bag, Ankle boot) only, relabelled 0–4:
  train-{images-idx3,labels-idx1}-ubyte.gz: the first TRAIN_PER_CLASS images of each class in the
      official training set (the few-shot pool: `--shots k` draws k of them per class, seeded);
  t10k-{images-idx3,labels-idx1}-ubyte.gz: the first VAL_PER_CLASS images of each class in the
      official test set (validation).
The names are MNIST's, so `bitgrad finetune --data assets/demo --format idx` reads the folder.
The upstream classes 0, 1, 2, 5, 7 (T-shirt/top, Trouser, Pullover, Sandal, Sneaker) are what the
shipped checkpoint was pre-trained on (`bitgrad pretrain`, see assets/demo/README.md); they are
not shipped. The split is BiT's situation in miniature: the upstream classes are broad (tops,
trousers, footwear), the downstream ones are new but related (other garments, another shoe, a
bag). (An earlier split — upstream 0–4, all clothing; downstream 5–9, mostly footwear — showed
no transfer: docs/benchmarks.md, "The demonstration".) Standard library only; the output is
deterministic.
"""

import argparse
import gzip
import os
import struct

UPSTREAM = [0, 1, 2, 5, 7]
DOWNSTREAM = [3, 4, 6, 8, 9]
TRAIN_PER_CLASS = 100
VAL_PER_CLASS = 300


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_idx(path, dims, payload):
    header = struct.pack(">I", 0x0800 | len(dims)) + struct.pack(">" + "I" * len(dims), *dims)
    # mtime=0: the same bytes on every run.
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
        f.write(header + payload)


def subset(src, split, per_class, out, name, classes=None):
    classes = DOWNSTREAM if classes is None else classes
    (n, h, w), images = read_idx(os.path.join(src, f"{split}-images-idx3-ubyte.gz"))
    (_,), labels = read_idx(os.path.join(src, f"{split}-labels-idx1-ubyte.gz"))
    picked = {c: [] for c in classes}
    for i in range(n):
        c = labels[i]
        if c in picked and len(picked[c]) < per_class:
            picked[c].append(i)
    per_class = min(len(v) for v in picked.values())
    # Interleave the classes (0, 1, 2, 3, 4, 0, 1, …) so any prefix is balanced.
    order = [picked[c][k] for k in range(per_class) for c in classes]
    img = b"".join(images[i * h * w:(i + 1) * h * w] for i in order)
    lab = bytes(classes.index(labels[i]) for i in order)
    write_idx(os.path.join(out, f"{name}-images-idx3-ubyte.gz"), (len(order), h, w), img)
    write_idx(os.path.join(out, f"{name}-labels-idx1-ubyte.gz"), (len(order),), lab)
    print(f"{name}: {len(order)} images of {h}×{w}, {per_class} per class")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", default="assets/demo")
    p.add_argument("--upstream", metavar="DIR", help="write the upstream classes here instead")
    a = p.parse_args()
    if a.upstream:
        os.makedirs(a.upstream, exist_ok=True)
        subset(a.src, "train", 10**9, a.upstream, "train", UPSTREAM)
        subset(a.src, "t10k", 10**9, a.upstream, "t10k", UPSTREAM)
        return
    os.makedirs(a.out, exist_ok=True)
    subset(a.src, "train", TRAIN_PER_CLASS, a.out, "train")
    subset(a.src, "t10k", VAL_PER_CLASS, a.out, "t10k")


if __name__ == "__main__":
    main()
