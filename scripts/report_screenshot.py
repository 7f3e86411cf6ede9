"""Screenshot of a satkern report in headless Chromium, cropped and scaled for the README.

    python scripts/report_screenshot.py demo_out/report.html docs/report.png [--height 1900] [--scale 0.6]

Also checks the page as the browser test does (images decoded, no outside request, clean console)
and refuses to write the picture of a page that fails.
"""
import argparse
import io
import sys

from PIL import Image

from satkern.report.browser import check_page


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1280, help="page width in CSS pixels (default 1280)")
    ap.add_argument("--height", type=int, default=1900, help="crop the page to this height (default 1900)")
    ap.add_argument("--scale", type=float, default=0.6, help="scale the crop by this factor (default 0.6)")
    args = ap.parse_args(argv)
    check = check_page(args.report, width=args.width)
    problems = check.broken_images + check.outside_requests + check.console_errors
    if problems:
        print(f"report_screenshot: the page has problems: {problems}", file=sys.stderr)
        return 1
    im = Image.open(io.BytesIO(check.screenshot_png)).convert("RGB")
    im = im.crop((0, 0, im.width, min(im.height, args.height)))
    im = im.resize((int(im.width * args.scale), int(im.height * args.scale)), Image.LANCZOS)
    im = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT)  # a palette PNG: a few hundred kB at most
    im.save(args.out, optimize=True)
    print(f"report_screenshot: {len(check.images)} images decoded, no outside request, clean console; "
          f"wrote {args.out} ({im.width}x{im.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
