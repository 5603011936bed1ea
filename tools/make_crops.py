#!/usr/bin/python3
"""A small two-class crop classification set from a VOC-layout detection set, for bench/train_crops.sh.

Every annotated object of the listed images becomes a crop of label 1; background windows (IoU below 0.3 with
every object, sized like the objects of the set) become crops of label 0, `--bg-per-image` of them per image, so
that background is the majority class. Crops are written as PNG into OUT/ with OUT/LIST.txt of `path label` lines
(paths relative to the list), the form `inception train --data` reads. Seeded: the same arguments give the same
files.

usage: tools/make_crops.py --root data/raccoon --list train-fit.txt --out out/crops --name train [--seed 1]
"""
import argparse
import os
import random
import xml.etree.ElementTree as ET

from PIL import Image


def boxes_of(xml_path):
    root = ET.parse(xml_path).getroot()
    out = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        out.append(tuple(int(float(b.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out


def iou(a, b):
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
    return inter / (area(a) + area(b) - inter)


def background(rng, w, h, objects, sizes, tries=200):
    for _ in range(tries):
        bw, bh = rng.choice(sizes)
        bw, bh = min(bw, w), min(bh, h)
        x1, y1 = rng.randint(1, w - bw + 1), rng.randint(1, h - bh + 1)
        box = (x1, y1, x1 + bw - 1, y1 + bh - 1)
        if all(iou(box, o) < 0.3 for o in objects):
            return box
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--list", required=True, help="a file of ImageSets/Main of the root")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--bg-per-image", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    names = [l.split()[0] for l in open(os.path.join(a.root, "ImageSets/Main", a.list)) if l.strip()]
    objects = {n: boxes_of(os.path.join(a.root, "Annotations", n + ".xml")) for n in names}
    sizes = [(b[2] - b[0] + 1, b[3] - b[1] + 1) for bs in objects.values() for b in bs]
    os.makedirs(a.out, exist_ok=True)
    lines, debt = [], 0.0
    for n in names:
        im = Image.open(os.path.join(a.root, "JPEGImages", n + ".jpg")).convert("RGB")
        crops = [(b, 1) for b in objects[n]]
        debt += a.bg_per_image
        while debt >= 1:
            debt -= 1
            b = background(rng, im.width, im.height, objects[n], sizes)
            if b:
                crops.append((b, 0))
        for k, (b, label) in enumerate(crops):
            file = "%s-%s-%d.png" % (a.name, n, k)
            im.crop((b[0] - 1, b[1] - 1, b[2], b[3])).save(os.path.join(a.out, file))
            lines.append("%s %d\n" % (file, label))
    with open(os.path.join(a.out, a.name + ".txt"), "w") as f:
        f.writelines(lines)
    pos = sum(l.endswith(" 1\n") for l in lines)
    print("%s: %d crops, %d objects, %d background (majority %.3f)" %
          (a.name, len(lines), pos, len(lines) - pos, max(pos, len(lines) - pos) / len(lines)))


if __name__ == "__main__":
    main()
