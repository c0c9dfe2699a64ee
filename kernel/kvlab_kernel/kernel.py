"""The kvlab Jupyter kernel: a wrapper kernel that drives `kvlab --serve NONCE` over pipes.

Protocol (see `kvlab --help` and Sources/KVRepl/Session/Serve.swift): the kernel writes one
command line per line to kvlab's stdin; kvlab's stdout carries each command's output verbatim
and records `\\x1Ekvlab:NONCE:BODY\\n`: `ready` once, `err LEN` (LEN bytes of error text follow),
and `done ok|failed|cancelled|quit CODE` after every line. NONCE is random per process, so no
output can forge a record. kvlab opens no sockets; the kernel's only sockets are those of the
connection file Jupyter gives it (ipykernel binds exactly those).

A cell runs line by line, like a script: output streams as `stdout`, error text as `stderr`,
and the first failing line ends the cell with an `error` reply (ename `KvlabError`, evalue the
error line), so nbclient and "Run All" stop there. Interrupt (SIGINT to the kernel) is
forwarded to kvlab, which cancels the running command and stays alive. If kvlab exits, the
cell fails with "kvlab exited with status N" and the next cell starts a fresh kvlab.
"""

import base64
import codecs
import json
import os
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from ipykernel.kernelbase import Kernel

from . import __version__


class KvlabNotFound(Exception):
    pass


def find_kvlab() -> str:
    """The kvlab binary: $KVLAB_BIN, else `kvlab` on PATH, else the repository's
    `.build/release/kvlab` (when this package runs from the repository: an editable install
    or PYTHONPATH=kernel)."""
    env = os.environ.get("KVLAB_BIN")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise KvlabNotFound(f"KVLAB_BIN={env} is not an executable file")
    on_path = shutil.which("kvlab")
    if on_path:
        return on_path
    repo_build = Path(__file__).resolve().parent.parent.parent / ".build" / "release" / "kvlab"
    if repo_build.is_file() and os.access(repo_build, os.X_OK):
        return str(repo_build)
    raise KvlabNotFound(
        "kvlab not found: set KVLAB_BIN, put kvlab on PATH, or build it in the repository "
        "(swift build -c release --product kvlab)"
    )


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"kvlab was killed by {name}"
    return f"kvlab exited with status {code}"


class KvlabExited(Exception):
    """kvlab ended while the kernel waited for it."""


class Child:
    """One `kvlab --serve` process and the reader of its protocol."""

    READY_TIMEOUT = 60.0

    def __init__(self, binary: str, extra_args: list[str]):
        self.nonce = secrets.token_hex(16)
        self.prefix = f"\x1ekvlab:{self.nonce}:".encode()
        # Its own session: Jupyter's interrupt signals the kernel's process group, and the kernel
        # forwards exactly one SIGINT, so kvlab never counts two presses for one interrupt.
        self.proc = subprocess.Popen(
            [binary, "--serve", self.nonce, *extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        self.buf = bytearray()
        self.stderr_lock = threading.Lock()
        self.stderr_text = ""
        self.stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self.stderr_thread.start()
        try:
            body = self._record(lambda text: None, timeout=self.READY_TIMEOUT)
        except KvlabExited as e:
            self.kill()
            said = self.take_stderr().strip()
            raise KvlabExited(f"{e} at start" + (f": {said}" if said else "")) from None
        if body != "ready":
            self.kill()
            raise KvlabExited(f"kvlab did not start: expected 'ready', got {body!r}")

    def _read_stderr(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stderr.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            with self.stderr_lock:
                self.stderr_text += decoder.decode(chunk)

    def take_stderr(self) -> str:
        """What kvlab wrote on stderr (outside the protocol) since the last call; once it has
        exited, all of it (waits up to 2 s for the pipe to close)."""
        if not self.alive:
            self.stderr_thread.join(timeout=2)
        with self.stderr_lock:
            text, self.stderr_text = self.stderr_text, ""
        return text

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _fill(self, timeout: float | None) -> None:
        """Reads more of stdout into buf; raises KvlabExited at EOF (or when the process has
        ended and nothing more comes, even if a grandchild keeps the pipe open)."""
        fd = self.proc.stdout.fileno()
        waited = 0.0
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise KvlabExited(self._exit_message())
                self.buf += chunk
                return
            waited += 0.2
            if self.proc.poll() is not None:
                raise KvlabExited(self._exit_message())
            if timeout is not None and waited >= timeout:
                raise KvlabExited("kvlab did not answer in time")

    def _exit_message(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return "kvlab closed its output and did not exit; killed it"
        return describe_exit(code)

    def _record(self, emit, timeout: float | None = None) -> str:
        """Streams output through emit until the next record; returns its body."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            at = self.buf.find(self.prefix)
            if at >= 0:
                end = self.buf.find(b"\n", at + len(self.prefix))
                if end >= 0:
                    text = decoder.decode(bytes(self.buf[:at]), final=True)
                    if text:
                        emit(text)
                    body = bytes(self.buf[at + len(self.prefix):end]).decode("utf-8", "replace")
                    del self.buf[: end + 1]
                    return body
                safe = at  # the record's line is still coming
            else:
                # Keep back a tail that may be the start of a record.
                safe = len(self.buf)
                rs = self.buf.rfind(b"\x1e")
                if rs >= 0 and self.prefix.startswith(bytes(self.buf[rs:])):
                    safe = rs
            if safe:
                text = decoder.decode(bytes(self.buf[:safe]))
                del self.buf[:safe]
                if text:
                    emit(text)
            self._fill(timeout)

    def _bytes(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill(None)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def run_line(self, line: str, stdout, stderr, display=lambda png, text: None) -> tuple[str, str]:
        """Runs one line; returns (status, error text). status: ok, failed, cancelled, quit CODE.
        A view shown as a picture goes to display(png_bytes, text). Raises KvlabExited if
        kvlab ends first."""
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise KvlabExited(self._exit_message())
        errors = ""
        while True:
            body = self._record(stdout)
            if body.startswith("err "):
                text = self._bytes(int(body[4:])).decode("utf-8", "replace")
                errors += text
                stderr(text)
            elif body.startswith("display "):
                png_len, text_len = (int(n) for n in body[8:].split())
                png = self._bytes(png_len)
                display(png, self._bytes(text_len).decode("utf-8", "replace"))
            elif body.startswith("done "):
                return body[5:], errors
            else:
                raise KvlabExited(f"kvlab sent an unknown record {body!r}")

    def help(self, text: str) -> str:
        """The help of the command text starts with ("" when it names none)."""
        self.proc.stdin.write(self.prefix + b"help " + text.encode() + b"\n")
        self.proc.stdin.flush()
        answer = ""
        while True:
            body = self._record(lambda t: None)
            if body.startswith("help "):
                answer = self._bytes(int(body[5:])).decode("utf-8", "replace")
            elif body.startswith("done "):
                return answer
            elif body.startswith("err "):
                self._bytes(int(body[4:]))
            else:
                raise KvlabExited(f"kvlab sent an unknown record {body!r}")

    def complete(self, text: str) -> tuple[str, list[str]]:
        """kvlab's Tab completion of text (the line before the cursor): (word, candidates)."""
        self.proc.stdin.write(self.prefix + b"complete " + text.encode() + b"\n")
        self.proc.stdin.flush()
        word, candidates = "", []
        while True:
            body = self._record(lambda t: None)
            if body.startswith("complete "):
                answer = json.loads(self._bytes(int(body[9:])).decode("utf-8", "replace"))
                word, candidates = answer["word"], answer["candidates"]
            elif body.startswith("done "):
                return word, candidates
            elif body.startswith("err "):
                self._bytes(int(body[4:]))
            else:
                raise KvlabExited(f"kvlab sent an unknown record {body!r}")

    def interrupt(self) -> None:
        if self.alive:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """EOF on stdin ends kvlab; it is killed if it does not go within 5 s."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class KvlabKernel(Kernel):
    implementation = "kvlab_kernel"
    implementation_version = __version__
    language = "kvlab"
    language_version = __version__
    language_info = {
        "name": "kvlab",
        "mimetype": "text/x-kvlab",
        "file_extension": ".kvl",
        "codemirror_mode": "shell",
        "pygments_lexer": "bash",
    }
    banner = (
        "kvlab — a notebook-style REPL around a CPU inference engine with a budgeted KV cache. "
        "One command per line; 'help' lists the commands."
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.child: Child | None = None
        self.interrupted = False
        self._silent = False

    # -- output ------------------------------------------------------------------------

    def _stream(self, name: str, text: str) -> None:
        if text and not self._silent:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _display(self, png: bytes, text: str) -> None:
        """A view as a picture: image/png, with its text as text/plain for frontends (and
        checks) that do not show images."""
        if not self._silent:
            self.send_response(self.iopub_socket, "display_data", {
                "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text},
                "metadata": {},
            })

    def _error(self, ename: str, evalue: str, traceback: list[str]) -> dict:
        return {
            "status": "error",
            "execution_count": self.execution_count,
            "ename": ename,
            "evalue": evalue,
            "traceback": traceback,
        }

    # -- the child ---------------------------------------------------------------------

    def _ensure_child(self) -> Child:
        if self.child is not None and self.child.alive:
            return self.child
        extra = shlex.split(os.environ.get("KVLAB_ARGS", ""))
        self.child = Child(find_kvlab(), extra)
        return self.child

    def _on_sigint(self, signum, frame) -> None:
        self.interrupted = True
        if self.child is not None:
            self.child.interrupt()

    # -- messages ----------------------------------------------------------------------

    def do_execute(
        self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,
        *, cell_meta=None, cell_id=None,
    ):
        self._silent = silent
        self.interrupted = False
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._execute(code)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _execute(self, code: str) -> dict:
        ok = {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": [],
            "user_expressions": {},
        }
        if self.child is not None and not self.child.alive:
            # It ended between cells (killed from outside): say so; the next cell starts afresh.
            code_ = self.child.proc.wait()
            self._stream("stderr", self.child.take_stderr())
            self.child = None
            message = f"{describe_exit(code_)}; the next cell starts a fresh kvlab"
            self._stream("stderr", message + "\n")
            return self._error("KvlabError", message, [message])
        try:
            child = self._ensure_child()
        except (KvlabNotFound, KvlabExited, OSError) as e:
            self.child = None
            message = str(e).splitlines()[0] if str(e) else "kvlab did not start"
            self._stream("stderr", f"error: {message}\n")
            return self._error("KvlabError", message, [message])

        for raw in code.splitlines():
            line = raw.rstrip("\r")
            if self.interrupted:
                break
            try:
                status, errors = child.run_line(
                    line, lambda t: self._stream("stdout", t), lambda t: self._stream("stderr", t),
                    self._display,
                )
            except KvlabExited as e:
                child.kill()
                self._stream("stderr", child.take_stderr())
                self.child = None
                message = f"{e}; the next cell starts a fresh kvlab"
                self._stream("stderr", message + "\n")
                return self._error("KvlabError", message, [message])
            self._stream("stderr", child.take_stderr())
            first = errors.splitlines()[0] if errors else ""
            if status == "ok":
                continue
            if status == "failed":
                return self._error("KvlabError", first, errors.splitlines())
            if status == "cancelled":
                return self._error("KeyboardInterrupt", first or "cancelled", errors.splitlines())
            if status.startswith("quit"):
                child.close()
                self.child = None
                code_ = int(status.split()[1]) if len(status.split()) > 1 else 0
                if code_ != 0:
                    message = f"kvlab quit with status {code_}"
                    return self._error("KvlabError", message, [message])
                return ok
            message = f"kvlab sent an unknown status {status!r}"
            return self._error("KvlabError", message, [message])
        if self.interrupted:
            return self._error("KeyboardInterrupt", "interrupted", ["interrupted"])
        return ok

    def do_complete(self, code, cursor_pos):
        """Tab: kvlab's own completion (commands, options, values, paths) of the cursor's line."""
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        before = code[:cursor_pos]
        line = before[before.rfind("\n") + 1:]
        reply = {"status": "ok", "matches": [], "cursor_start": cursor_pos,
                 "cursor_end": cursor_pos, "metadata": {}}
        if "\n" in line or "\r" in line:
            return reply
        try:
            word, candidates = self._ensure_child().complete(line)
        except (KvlabNotFound, KvlabExited, OSError):
            return reply
        reply["matches"] = candidates
        reply["cursor_start"] = cursor_pos - len(word)
        return reply

    def do_inspect(self, code, cursor_pos, detail_level=0, omit_sections=()):
        """Shift-Tab: the help of the command on the cursor's line, as `help` prints it."""
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        start = code.rfind("\n", 0, cursor_pos) + 1
        end = code.find("\n", cursor_pos)
        line = code[start:] if end < 0 else code[start:end]
        reply = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        try:
            text = self._ensure_child().help(line.strip())
        except (KvlabNotFound, KvlabExited, OSError):
            return reply
        if text:
            reply["found"] = True
            reply["data"] = {"text/plain": text}
        return reply

    def do_shutdown(self, restart):
        if self.child is not None:
            self.child.close()
            self.child = None
        return {"status": "ok", "restart": restart}
