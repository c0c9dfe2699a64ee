"""The kvlab kernel over jupyter_client, as JupyterLab drives it: interrupt cancels a running
command and the kernel goes on; kvlab killed during a cell or between cells gives a clear cell
error (never a hang) and the next cell gets a fresh kvlab; `quit` ends the session cleanly;
the kernel listens only on the connection file's ports and kvlab holds no sockets; views come
as pictures (image/png) and Shift-Tab shows a command's help. Needs the
`kvlab` kernelspec installed (kernel/run_notebook.sh does it). Exit status 1 on a failure."""

import base64
import os
import queue
import signal
import sys
import time

from jupyter_client.manager import start_new_kernel

failures: list[str] = []


def expect(what: str, got, want) -> None:
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")
        print(f"FAIL {what}: got {got!r}, want {want!r}")
    else:
        print(f"ok   {what}")


def run(kc, code: str, timeout: float = 60, during=None, displays=None) -> tuple[dict, dict[str, str]]:
    """Executes code; returns the reply's content and the text of each stream (display_data
    contents go to the list displays, when given)."""
    msg_id = kc.execute(code)
    if during:
        during()
    streams: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no idle status for {code!r} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            streams[content["name"]] = streams.get(content["name"], "") + content["text"]
        elif kind == "display_data" and displays is not None:
            displays.append(content["data"])
        elif kind == "status" and content["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=max(1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], streams


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def kvlab_pid(kernel_pid: int) -> int:
    for pid in children(kernel_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--serve" in argv:
            return pid
    raise RuntimeError("no kvlab --serve child of the kernel")


def gone(pid: int, timeout: float = 10) -> bool:
    """Whether pid has exited (a zombie counts) within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening(inodes: set[str]) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets among inodes that listen."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:
                address, port = local.split(":")
                if len(address) == 8:
                    ip = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = address
                found.add((ip, int(port, 16)))
    return found


def main() -> int:
    km, kc = start_new_kernel(kernel_name="kvlab")
    kernel_pid = km.provisioner.process.pid
    try:
        reply, out = run(kc, "echo hello")
        expect("a cell runs", (reply["status"], out), ("ok", {"stdout": "hello\n"}))

        # Tab completion comes from kvlab's completer.
        msg_id = kc.complete("echo x\npolicy snapkv win", 24)
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        c = reply["content"]
        expect("completion", (c["status"], c["matches"], c["cursor_start"], c["cursor_end"]),
               ("ok", ["window="], 21, 24))

        # Views as pictures: cache map and mem plot send image/png display data, with the
        # terminal's text as text/plain.
        shown: list[dict] = []
        reply, out = run(kc, "load ../../weights/kvlab-shapes\nbudget 64 tokens\n"
                             "prefill mode=capped block=tile\nfeed synthetic needle-image seed=5\n"
                             "cache map\nmem plot", timeout=120, displays=shown)
        expect("views run", reply["status"], "ok")
        expect("two pictures", len(shown), 2)
        for data, first in zip(shown, ["share of the ", "memory plot: "]):
            png = base64.b64decode(data.get("image/png", ""))
            expect(f"{first.strip()}: a PNG", png[:8], b"\x89PNG\r\n\x1a\n")
            expect(f"{first.strip()}: its text", data.get("text/plain", "").startswith(first), True)
        expect("no picture's text on stdout", "share of the " in out.get("stdout", ""), False)

        # Shift-Tab (inspect): the help of the command on the cursor's line.
        msg_id = kc.inspect("echo x\ncache map out=m.png", 9)
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        c = reply["content"]
        text = c.get("data", {}).get("text/plain", "")
        expect("inspect finds the command", (c["status"], c["found"]), ("ok", True))
        expect("inspect shows its help", text.startswith("usage: cache map"), True)
        msg_id = kc.inspect("nosuchcommand", 3)
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        expect("inspect of no command", reply["content"]["found"], False)

        # The sockets: the kernel listens exactly on the connection file's ports on its IP
        # (127.0.0.1 by default); kvlab has none.
        info = km.get_connection_info()
        ports = {info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")}
        expect(
            "the kernel listens only where the connection file says",
            listening(socket_inodes(kernel_pid)),
            {(info["ip"], p) for p in ports},
        )
        expect("kvlab holds no sockets", socket_inodes(kvlab_pid(kernel_pid)), set())

        # Interrupt: the running command is cancelled, the rest of the cell is not run, kvlab
        # (the same process) goes on.
        before = kvlab_pid(kernel_pid)
        start = time.monotonic()
        reply, out = run(
            kc, "sleep 60\necho not reached", during=lambda: (time.sleep(1.5), km.interrupt_kernel())
        )
        expect(
            "interrupt cancels the command",
            (reply["status"], reply.get("ename"), reply.get("evalue"), out),
            ("error", "KeyboardInterrupt", "^C cancelled: sleep stopped early",
             {"stderr": "^C cancelled: sleep stopped early\n"}),
        )
        expect("interrupt answers promptly", time.monotonic() - start < 15, True)
        reply, out = run(kc, "echo alive")
        expect("after an interrupt", (reply["status"], out, kvlab_pid(kernel_pid)),
               ("ok", {"stdout": "alive\n"}, before))

        # kvlab killed during a cell: a cell error, no hang; the next cell gets a fresh kvlab.
        def kill_it():
            time.sleep(1.5)
            os.kill(kvlab_pid(kernel_pid), signal.SIGKILL)

        reply, out = run(kc, "load ../../Tests/KVEngineTests/Fixtures/vlm/idefics3/model\nsleep 60",
                         during=kill_it, timeout=30)
        message = "kvlab was killed by SIGKILL; the next cell starts a fresh kvlab"
        expect("kvlab killed mid-cell", (reply["status"], reply.get("ename"), reply.get("evalue")),
               ("error", "KvlabError", message))
        expect("its output came first", out.get("stdout", "").startswith("loaded model: idefics3"), True)
        reply, out = run(kc, "tokenize hi")
        expect("the next cell runs in a fresh kvlab (nothing loaded)",
               (reply["status"], reply.get("evalue")),
               ("error", "error: tokenize: no model loaded (use 'load' first)"))

        # Killed between cells: the next cell says so; the one after runs.
        os.kill(kvlab_pid(kernel_pid), signal.SIGKILL)
        time.sleep(0.5)
        reply, out = run(kc, "echo x")
        expect("kvlab killed between cells", (reply["status"], reply.get("evalue"), out),
               ("error", message, {"stderr": message + "\n"}))
        reply, out = run(kc, "echo back")
        expect("and then", (reply["status"], out), ("ok", {"stdout": "back\n"}))

        # quit ends the session (the rest of the cell is not run); the next cell starts anew.
        reply, out = run(kc, "echo a\nquit\necho b")
        expect("quit", (reply["status"], out), ("ok", {"stdout": "a\n"}))
        reply, out = run(kc, "echo c")
        expect("after quit", (reply["status"], out), ("ok", {"stdout": "c\n"}))
        last = kvlab_pid(kernel_pid)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    expect("shutdown ends kvlab", gone(last), True)
    if failures:
        print(f"test_kernel.py: {len(failures)} failure(s)")
        return 1
    print("test_kernel.py: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
