"""The ``stmatch`` command line: ``stmatch demo`` and ``stmatch asn``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from ._demo import demo

__all__ = ["demo", "main"]


def main(argv=None):
    """Entry point of the ``stmatch`` command."""
    parser = argparse.ArgumentParser(prog="stmatch", description="stmatch utilities")
    parser.add_argument("--version", action="version", version=f"stmatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the steps on built-in synthetic data")
    p_demo.add_argument(
        "--output-dir",
        default="stmatch_demo",
        help="directory for data, outputs and figures (default: %(default)s)",
    )
    p_demo.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    _add_asn_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.output_dir, seed=args.seed)
    elif args.command == "asn":
        return asn_command(args, parser)
    return 0


def _add_asn_parser(sub):
    p_asn = sub.add_parser(
        "asn",
        help="write a difference-imaging association (science exposures and a template)",
        description=(
            "Write an association for strun stmatch_diffim: the science exposures are "
            "members of exptype 'science', the template the one member of exptype "
            "'template'. Member paths are written relative to the association's directory."
        ),
    )
    p_asn.add_argument(
        "--science", nargs="+", required=True, metavar="FILE", help="science exposures"
    )
    p_asn.add_argument("--template", required=True, metavar="FILE", help="the template")
    p_asn.add_argument(
        "-o",
        "--output",
        default="diffim_asn.json",
        help="association file to write (default: %(default)s)",
    )
    p_asn.add_argument(
        "--product",
        default=None,
        help="product name (default: the output file name without _asn.json)",
    )


def asn_command(args, parser):
    """``stmatch asn``: write a difference-imaging association and say what it holds."""
    from .pipelines._asn import make_diffim_association, save_association

    out = Path(args.output)
    product = args.product or out.name.removesuffix(".json").removesuffix("_asn") or "diffim"
    try:
        asn = make_diffim_association(
            args.science, args.template, product_name=product, relative_to=out.parent
        )
        path = save_association(asn, out)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"stmatch asn: error: {exc}\n")
    members = asn["products"][0]["members"]
    print(f"wrote {path}: product {product!r}")
    for m in members:
        print(f"  {m['exptype']:<9} {m['expname']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
