"""Executes notebooks through the `kvlab` kernel with nbclient and checks them.

    python check_notebooks.py [--update] NOTEBOOK...

Each notebook runs in its own folder (as JupyterLab runs it). Every executed code cell's
outputs must equal the stored ones (a view shown as a picture by its text and by being a
PNG), compared as `kvlab replay --check` compares (runs of
blanks as one, and a value marked `~` (a time, an RSS) matching any value: `mask`); consecutive
pieces of one stream are joined first, as Jupyter shows them. A notebook whose metadata has
`kvlab_test.expect_error = {"cell": I, "ename": ..., "evalue": ...}` must make nbclient raise
CellExecutionError at code cell I (0-based, among all cells) with that ename and evalue; any
other notebook must run without one. --update rewrites the stored outputs (joined as
above) instead of comparing. The kernel's kvlab runs `--prefill-kernel sgemm` (the reference,
so that stored outputs do not depend on the CPU) unless $KVLAB_ARGS names another.
Exit status 1 on any difference.
"""

import argparse
import base64
import difflib
import json
import os
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def normalise(outputs) -> list[dict]:
    out: list[dict] = []
    for o in outputs:
        kind = o["output_type"]
        if kind == "stream":
            if out and out[-1]["output_type"] == "stream" and out[-1]["name"] == o["name"]:
                out[-1]["text"] += o["text"]
            else:
                out.append({"output_type": "stream", "name": o["name"], "text": o["text"]})
        elif kind == "display_data" and "image/png" in o.get("data", {}):
            # A view shown as a picture compares by its text: the picture is drawn from the
            # same state (and a memory plot's resident-set curve varies between runs); it
            # must be a PNG all the same.
            data = o["data"]
            png = base64.b64decode("".join(data["image/png"]))
            text = data.get("text/plain", "")
            out.append({"output_type": kind, "png": png.startswith(b"\x89PNG\r\n\x1a\n"),
                        "text": "".join(text) if isinstance(text, list) else text})
        elif kind in ("execute_result", "display_data"):
            out.append({"output_type": kind, "data": dict(o.get("data", {}))})
        elif kind == "error":
            out.append({"output_type": "error", "ename": o["ename"], "evalue": o["evalue"]})
        else:
            out.append(dict(o))
    return out


def coalesce(outputs) -> list:
    """Consecutive pieces of one stream joined; other outputs as they are."""
    out: list = []
    for o in outputs:
        if (o["output_type"] == "stream" and out and out[-1]["output_type"] == "stream"
                and out[-1]["name"] == o["name"]):
            out[-1]["text"] += o["text"]
        else:
            out.append(o)
    return out


def mask(line: str) -> str:
    """kvlab's `Mask.apply`: blanks collapse to one space (trailing ones dropped), and a `~`
    not preceded by a letter or digit starts a varying value, up to a blank, `)` or `,`, that
    compares as `~*`."""
    out: list[str] = []
    volatile = False
    previous = " "
    for ch in line:
        blank = ch in " \t"
        if volatile and (blank or ch in "),"):
            volatile = False
        if blank:
            if out and out[-1] != " ":
                out.append(" ")
        elif volatile:
            pass
        elif ch == "~" and not previous.isalnum():
            volatile = True
            out.append("~*")
        else:
            out.append(ch)
        previous = ch
    return "".join(out).rstrip(" ")


def as_text(outputs: list[dict]) -> list[str]:
    lines: list[str] = []
    for o in outputs:
        if o["output_type"] == "stream":
            lines.append(f"[{o['name']}]")
            lines += o["text"].splitlines()
        elif "png" in o:
            lines.append("[display: PNG]" if o["png"] else "[display: not a PNG]")
            lines += o["text"].splitlines()
        else:
            lines += json.dumps(o, indent=1, sort_keys=True).splitlines()
    return lines


def check(path: str, update: bool, timeout: int) -> bool:
    name = os.path.basename(path)
    stored = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    folder = os.path.dirname(os.path.abspath(path))
    client = NotebookClient(
        nb, kernel_name="kvlab", timeout=timeout, resources={"metadata": {"path": folder}}
    )
    raised = None
    try:
        client.execute()
    except CellExecutionError as e:
        raised = e

    expect = stored.metadata.get("kvlab_test", {}).get("expect_error")
    ok = True
    if expect is None and raised is not None:
        print(f"FAIL {name}: a cell failed: {raised.ename}: {raised.evalue}")
        print(str(raised))
        ok = False
    elif expect is not None:
        if raised is None:
            print(f"FAIL {name}: expected cell {expect['cell']} to fail, but every cell ran")
            ok = False
        else:
            failed_at = next(
                (i for i, c in reversed(list(enumerate(nb.cells)))
                 if c.cell_type == "code" and c.get("execution_count") is not None),
                None,
            )
            got = (failed_at, raised.ename, raised.evalue)
            want = (expect["cell"], expect["ename"], expect["evalue"])
            if got != want:
                print(f"FAIL {name}: expected the error {want}, got {got}")
                ok = False
            else:
                print(f"{name}: cell {failed_at} failed as expected: {raised.ename}: {raised.evalue}")

    if update:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = coalesce(cell.outputs)
        nbformat.write(nb, path)
        print(f"{name}: outputs updated")
        return ok

    for i, (want, got) in enumerate(zip(stored.cells, nb.cells)):
        if want.cell_type != "code":
            continue
        a, b = as_text(normalise(want.outputs)), as_text(normalise(got.outputs))
        if [mask(x) for x in a] != [mask(x) for x in b]:
            ok = False
            print(f"FAIL {name}: cell {i} output differs from the stored output")
            source = want.source.splitlines()[0] if want.source else ""
            for line in difflib.unified_diff(
                a, b, f"stored (cell {i}: {source})", "executed", lineterm=""
            ):
                print(line)
    if ok and expect is None:
        cells = sum(c.cell_type == "code" for c in nb.cells)
        print(f"{name}: {cells} code cells, outputs match")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--update", action="store_true", help="rewrite the stored outputs")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    args = parser.parse_args()
    # Stored outputs are the float32 reference's (as `kvlab notebook run` makes them under
    # `--prefill-kernel auto`), the same on a CPU with avx512_bf16 and one without; an option
    # already in $KVLAB_ARGS comes later and wins.
    os.environ["KVLAB_ARGS"] = ("--prefill-kernel sgemm " + os.environ.get("KVLAB_ARGS", "")).strip()
    results = [check(p, args.update, args.timeout) for p in args.notebooks]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
