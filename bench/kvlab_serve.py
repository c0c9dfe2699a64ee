"""A kvlab-bench serving process (--serve or --vision-serve FOLDER): one command per stdin line,
one JSON line back. Shared by the peer-comparison scripts in bench/."""
import json
import subprocess


class Kvlab:
    def __init__(self, binary, mode_args, threads, env, cwd):
        self.proc = subprocess.Popen([binary, *mode_args, "--threads", str(threads)], cwd=cwd,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.ready = self._read()

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"kvlab-bench exited ({self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
