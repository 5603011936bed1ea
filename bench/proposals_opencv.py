#!/usr/bin/python3
"""OpenCV's Selective Search (opencv-contrib ximgproc) on a list of images, written as an `inception proposals`
JSON file so that `inception proposals --eval --from FILE` measures both implementations with the same code.

Each image is resized (INTER_AREA) so its longer side is at most --max-side, as `inception proposals` does, and
the boxes are mapped back to the input pixels, 1-based inclusive. The time per image covers the resize, the
colour conversions and segmentation inside OpenCV, not the JPEG decoding (the same as our "seconds").

usage: /usr/bin/python3 bench/proposals_opencv.py [--mode fast|quality] [--max-side 500] -o out.json
       [--filtered-output out20.json [--min-box 20]] IMAGES...
"""
import argparse
import json
import os
import sys
import time

import cv2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--mode", choices=["fast", "quality"], default="fast")
    ap.add_argument("--max-side", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="cv2.setNumThreads (default: OpenCV's choice)")
    ap.add_argument("--filtered-output", help="also write the boxes without those narrower or shorter than "
                    "--min-box at the working size, as R-CNN filters them (same run, same times)")
    ap.add_argument("--min-box", type=int, default=20)
    args = ap.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)
    out, filtered = [], []
    for n, path in enumerate(args.images):
        im = cv2.imread(path, cv2.IMREAD_COLOR)
        if im is None:
            sys.exit(f"proposals_opencv: cannot read {path}")
        h0, w0 = im.shape[:2]
        t0 = time.perf_counter()
        longer = max(w0, h0)
        w, h = w0, h0
        if args.max_side and longer > args.max_side:
            s = args.max_side / longer
            w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(im)
        if args.mode == "fast":
            ss.switchToSelectiveSearchFast()
        else:
            ss.switchToSelectiveSearchQuality()
        rects = ss.process()
        seconds = time.perf_counter() - t0
        sx, sy = w0 / w, h0 / h
        boxes, kept = [], []
        for x, y, bw, bh in rects:  # 0-based x, y, width, height at the working size
            x1, y1 = int(x * sx + 0.5) + 1, int(y * sy + 0.5) + 1
            x2, y2 = min(w0, int((x + bw) * sx + 0.5)), min(h0, int((y + bh) * sy + 0.5))
            boxes.append([x1, y1, max(x1, x2), max(y1, y2)])
            if bw >= args.min_box and bh >= args.min_box:
                kept.append(boxes[-1])
        out.append({"file": path, "width": w0, "height": h0, "seconds": round(seconds, 6), "boxes": boxes})
        filtered.append(dict(out[-1], boxes=kept))
        print(f"\ropencv {args.mode} {n + 1}/{len(args.images)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    setting = (f"opencv {cv2.__version__} ximgproc selective search {args.mode}, max_side {args.max_side}, "
               f"threads {cv2.getNumThreads()}")
    write(args.output, {"setting": setting, "images": out})
    if args.filtered_output:
        write(args.filtered_output, {"setting": setting + f", min_box {args.min_box}", "images": filtered})


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
