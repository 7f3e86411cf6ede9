"""Screenshot of a satkern report in headless Chromium, cropped and scaled for the README.

    python scripts/report_screenshot.py demo_out/report.html docs/report.png [--height 1900] [--scale 0.6]
    python scripts/report_screenshot.py demo_out/report.html docs/report-maps.png --section attention-maps
    python scripts/report_screenshot.py demo_out/report.html docs/report-explorer.png --explorer 5,0 --scale 1

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
    ap.add_argument("--section", help="start the crop at the element with this id (e.g. attention-maps)")
    ap.add_argument("--explorer", metavar="L,H", help="the head explorer instead: click layer L head H's thumbnail, "
                    "hover and click a point of its map, and take the viewport")
    args = ap.parse_args(argv)
    if args.explorer:
        return explorer_shot(args)
    scripts = ([f"(() => {{ const e = document.getElementById({args.section!r}); "
                f"return e ? e.getBoundingClientRect().top + window.scrollY : -1; }})()"] if args.section else [])
    check = check_page(args.report, width=args.width, scripts=scripts)
    problems = check.broken_images + check.outside_requests + check.console_errors
    if problems:
        print(f"report_screenshot: the page has problems: {problems}", file=sys.stderr)
        return 1
    im = Image.open(io.BytesIO(check.screenshot_png)).convert("RGB")
    top = 0
    if args.section:
        found = check.script_results[0] if check.script_results else -1
        if found is None or found < 0:
            print(f"report_screenshot: no element with id {args.section!r} in the page", file=sys.stderr)
            return 1
        top = int(found * im.width / args.width)  # CSS pixels to screenshot pixels
    im = im.crop((0, top, im.width, min(im.height, top + args.height)))
    im = im.resize((int(im.width * args.scale), int(im.height * args.scale)), Image.LANCZOS)
    im = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT)  # a palette PNG: a few hundred kB at most
    im.save(args.out, optimize=True)
    print(f"report_screenshot: {len(check.images)} images decoded, no outside request, clean console; "
          f"wrote {args.out} ({im.width}x{im.height})")
    return 0


def explorer_shot(args) -> int:
    """The head explorer as a user leaves it: a head picked by a real click on its thumbnail, the
    pointer over a point of its map (tooltip shown), that query's row plotted."""
    from satkern.report.browser import open_page

    try:
        layer, head = (int(x) for x in args.explorer.split(","))
    except ValueError:
        print(f"report_screenshot: --explorer: expected L,H (two integers); got {args.explorer!r}", file=sys.stderr)
        return 2
    with open_page(args.report, width=args.width, height=980) as page:
        page.wait_for("document.querySelector('.sk-explorer') && document.querySelector('.sk-explorer').dataset.ready === '1'")

        def center(sel, fx=0.5, fy=0.5):
            r = page.evaluate(f"(() => {{ const e = document.querySelector({sel!r}); if (!e) return null; "
                              f"e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); "
                              f"return [r.left, r.top, r.width, r.height]; }})()")
            return None if r is None else (r[0] + fx * r[2], r[1] + fy * r[3])

        cell = center(f'.sk-explorer .skx-cell[data-layer="{layer}"][data-head="{head}"]')
        if cell is None:
            print(f"report_screenshot: --explorer: no thumbnail of layer {layer} head {head}", file=sys.stderr)
            return 1
        page.click(*cell)
        page.evaluate("document.getElementById('head-explorer').scrollIntoView({block: 'start'})")
        r = page.evaluate("(() => { const r = document.querySelector('.sk-explorer canvas.skx-over')"
                          ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
        x, y = r[0] + 0.62 * r[2], r[1] + 0.55 * r[3]
        page.click(x, y)
        page.move(x, y)
        png = page.screenshot()
        problems = page.outside_requests() + page.console_errors()
    if problems:
        print(f"report_screenshot: the page has problems: {problems}", file=sys.stderr)
        return 1
    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.resize((int(im.width * args.scale), int(im.height * args.scale)), Image.LANCZOS)
    im = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    im.save(args.out, optimize=True)
    print(f"report_screenshot: explorer at layer {layer} head {head}, no outside request, clean console; "
          f"wrote {args.out} ({im.width}x{im.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
