#!/usr/bin/python3
"""Independent check of `inception multibox priors` on a VOC-layout set (numpy, no code shared with the C side).

usage: tools/multibox_priors_check.py ROOT priors.json [LIST.txt]

Reads every annotation (or those LIST names), clips and normalises the boxes as the conventions say, then checks
that the priors file is a k-means fixed point of those boxes (each prior is the mean of the boxes nearest to it,
and has some) and that its "boxes" and "mean_best_iou" are what the boxes give. Exits 1 on a mismatch.
"""
import json
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np


def load_boxes(root, names):
    boxes = []
    for name in names:
        ann = ET.parse(os.path.join(root, "Annotations", name + ".xml")).getroot()
        W, H = int(ann.find("size/width").text), int(ann.find("size/height").text)
        for obj in ann.findall("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
            x1, y1, x2, y2 = max(x1, 1), max(y1, 1), min(x2, W), min(y2, H)
            if x2 < x1 or y2 < y1:
                continue
            boxes.append([(x1 - 1) / W, (y1 - 1) / H, x2 / W, y2 / H])
    return np.array(boxes, dtype=np.float32).astype(np.float64)


def iou(a, b):  # (n, 4) x (k, 4) -> (n, k), continuous areas
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def main():
    root, priors_path = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        names = [l.split()[0] for l in open(sys.argv[3]) if l.strip() and not l.startswith("#")]
    else:
        names = sorted(f[:-4] for f in os.listdir(os.path.join(root, "Annotations")) if f.endswith(".xml"))
    boxes = load_boxes(root, names)
    doc = json.load(open(priors_path))
    priors = np.array(doc["priors"], dtype=np.float64)
    ok = True
    if doc["boxes"] != len(boxes):
        print(f"boxes: file {doc['boxes']}, reference {len(boxes)}")
        ok = False
    d = ((boxes[:, None, :] - priors[None, :, :]) ** 2).sum(-1)
    nearest = d.argmin(1)
    worst = 0.0
    for j in range(len(priors)):
        members = boxes[nearest == j]
        if len(members) == 0:
            print(f"prior {j} has no boxes")
            ok = False
            continue
        worst = max(worst, np.abs(members.mean(0) - priors[j]).max())
    if worst > 1e-6:
        print(f"priors are not the means of their clusters: worst difference {worst:.3g}")
        ok = False
    mbi = iou(boxes, priors).max(1).mean()
    if abs(mbi - doc["mean_best_iou"]) > 1e-6:
        print(f"mean_best_iou: file {doc['mean_best_iou']}, reference {mbi}")
        ok = False
    print(f"{len(boxes)} boxes, {len(priors)} priors, largest prior-mean difference {worst:.2g}, "
          f"mean best IoU {mbi:.6f} (file {doc['mean_best_iou']:.6f}): {'ok' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
