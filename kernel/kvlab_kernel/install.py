"""Writes the `kvlab` kernelspec (kernel.json) where Jupyter looks for kernels."""

import argparse
import json
import os
import sys
import tempfile

from .kernel import find_kvlab, KvlabNotFound

SPEC_NAME = "kvlab"


def kernel_json(kvlab: str | None) -> dict:
    spec = {
        "argv": [sys.executable, "-m", "kvlab_kernel", "-f", "{connection_file}"],
        "display_name": "kvlab",
        "language": "kvlab",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }
    if kvlab:
        spec["env"] = {"KVLAB_BIN": kvlab}
    return spec


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvlab_kernel install",
        description="Install the kvlab Jupyter kernelspec (name 'kvlab'). Default: --sys-prefix "
        "inside a virtual environment, else --user.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter data folder")
    where.add_argument(
        "--sys-prefix", action="store_true", help="into this Python's prefix (a venv or conda env)"
    )
    where.add_argument("--prefix", metavar="P", help="into prefix P (P/share/jupyter/kernels)")
    parser.add_argument(
        "--kvlab",
        metavar="PATH",
        help="the kvlab binary the kernel runs (recorded as KVLAB_BIN in the kernelspec); "
        "without it the kernel looks at $KVLAB_BIN, then kvlab on PATH, then the "
        "repository's .build/release/kvlab",
    )
    args = parser.parse_args(argv)

    kvlab = None
    if args.kvlab:
        kvlab = os.path.abspath(args.kvlab)
        if not (os.path.isfile(kvlab) and os.access(kvlab, os.X_OK)):
            print(f"error: install: --kvlab {args.kvlab}: not an executable file", file=sys.stderr)
            return 1
    else:
        try:
            find_kvlab()
        except KvlabNotFound as e:
            print(f"warning: {e} (the kernel installs anyway; it looks again when it starts)",
                  file=sys.stderr)

    from jupyter_client.kernelspec import KernelSpecManager

    in_venv = sys.prefix != sys.base_prefix
    user, prefix = False, None
    if args.user:
        user = True
    elif args.sys_prefix:
        prefix = sys.prefix
    elif args.prefix:
        prefix = args.prefix
    elif in_venv:
        prefix = sys.prefix
    else:
        user = True

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(kernel_json(kvlab), f, indent=2)
            f.write("\n")
        dest = KernelSpecManager().install_kernel_spec(
            tmp, SPEC_NAME, user=user, prefix=prefix
        )
    print(f"installed kernelspec '{SPEC_NAME}' in {dest}")
    return 0
