#!/usr/bin/env python3
"""Interactive behaviour of kvlab under a pseudo-terminal: prompt, Ctrl-D, tab completion,
history file, Ctrl-C at the prompt and during a command.

    python3 Tests/pty/test_interactive.py .build/debug/kvlab [-v] [TestName...]

Needs pexpect (in the system python3). Model tests run only when
models/SmolLM2-135M-Instruct.Q4_1.gguf exists.
"""
import os
import re
import shutil
import sys
import tempfile
import termios
import time
import unittest

import pexpect

BINARY = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT = "kvlab> "
UP = "\x1b[A"


class PtyCase(unittest.TestCase):
    """kvlab under a pseudo-terminal in a fresh folder, with its own history file."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kvlab-pty-")
        self.history = os.path.join(self.dir, "history")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def spawn(self, *args, cwd=None, timeout=15, columns=120):
        env = dict(os.environ, KVLAB_HISTORY=self.history, TERM="xterm")
        p = pexpect.spawn(BINARY, list(args), env=env, cwd=cwd or self.dir, encoding="utf-8",
                          timeout=timeout, dimensions=(40, columns))
        if os.environ.get("PTY_VERBOSE"):
            p.logfile_read = sys.stdout
        self.addCleanup(p.close, force=True)
        return p

    def start(self, **kw):
        p = self.spawn(**kw)
        p.expect_exact(PROMPT)
        return p

    def wait_for_raw_mode(self, p, timeout=15):
        """Waits until libedit has put the terminal in raw mode (ICANON off). libedit prints the
        prompt first and switches to raw mode only at its first read, so on a loaded machine a
        key sent as soon as the prompt shows can still meet the cooked line discipline, which
        swallows a Ctrl-D. tcgetattr on a pty's master gives the slave's modes (Linux)."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(p.child_fd)[3] & termios.ICANON:
            if time.monotonic() > deadline:
                self.fail("the terminal never left canonical mode")
            time.sleep(0.01)

    def finish(self, p):
        """Ctrl-D at an empty prompt (the caller has seen the prompt)."""
        self.wait_for_raw_mode(p)
        p.sendcontrol("d")
        p.expect(pexpect.EOF)
        p.close()
        self.assertEqual(p.exitstatus, 0)


class Interactive(PtyCase):
    # -- prompt and leaving

    def test_ctrl_d_exits_cleanly(self):
        p = self.start()
        p.sendline("echo hello")
        p.expect_exact("hello")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_quit_exits_cleanly(self):
        p = self.start()
        p.sendline("quit")
        p.expect(pexpect.EOF)
        p.close()
        self.assertEqual(p.exitstatus, 0)

    def test_error_keeps_the_repl_running(self):
        p = self.start()
        p.sendline("lod x")
        p.expect_exact("error: unknown command 'lod' (did you mean 'load'?)")
        p.expect_exact(PROMPT)
        p.sendline('feed text "abc')
        p.expect_exact("error: feed: unterminated quote (opened at column 11)")
        p.expect_exact(PROMPT)
        p.sendline("echo still here")
        p.expect_exact("still here")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_long_pasted_line_is_read_whole(self):
        """A 17 KB line pasted at the prompt (written in 1 KiB pieces, as a terminal passes a
        paste on) runs whole: the command sees every byte, none is dropped."""
        p = self.start(timeout=120)
        self.wait_for_raw_mode(p)
        text = ("lighthouse keeper " * 1000)[:17000].strip()
        data = ('echo "' + text + '"\r').encode()
        for i in range(0, len(data), 1024):
            os.write(p.child_fd, data[i:i + 1024])
        # The echo of the typed line, then the output line, then the prompt.
        p.expect_exact(text + "\r\n" + PROMPT)
        self.finish(p)

    def test_recording_shows_in_the_prompt(self):
        p = self.start()
        p.sendline("record start s.kvl")
        p.expect_exact("recording to s.kvl")
        p.expect_exact("kvlab rec> ")
        p.sendline("echo one")
        p.expect_exact("kvlab rec> ")
        p.sendline("record stop")
        p.expect_exact("recorded 1 command to s.kvl")
        p.expect_exact(PROMPT)
        self.finish(p)
        with open(os.path.join(self.dir, "s.kvl")) as f:
            self.assertTrue(f.read().endswith("echo one\n#> one\n"))

    # -- completion

    def test_completes_a_command_name(self):
        p = self.start()
        p.send("tok\t")
        p.expect_exact("enize ")
        p.send('"a"\r')
        p.expect_exact("error: tokenize: no model loaded (use 'load' first)")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_lists_subcommands(self):
        p = self.start()
        p.send("record st\t")
        p.expect_exact("\x07")  # one Tab: the common prefix, and a bell
        for _ in range(3):  # a second Tab lists the matches
            p.send("\t")
            if p.expect([r"start\s+stop", "\x07"]) == 0:
                break
        else:
            self.fail("Tab did not list the matches")
        p.expect_exact(PROMPT + "record st")  # the line is redrawn below the list
        p.sendcontrol("c")
        p.expect_exact("^C\r\n" + PROMPT)
        self.finish(p)

    def test_completes_option_keys_and_values(self):
        p = self.start()
        p.send("mem un\t")
        p.expect_exact("it=")
        p.send("Mi\t")
        p.expect_exact("B ")
        p.send("\r")
        p.expect(r"weights\s+0\.00 MiB")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_completes_paths(self):
        os.makedirs(os.path.join(self.dir, "scripts"))
        open(os.path.join(self.dir, "scripts", "demo.kvl"), "w").write("echo from demo\n")
        p = self.start()
        p.send("replay scr\t")
        p.expect_exact("ipts/")
        p.send("\t")
        p.expect_exact("demo.kvl ")
        p.send("\r")
        p.expect_exact("from demo")
        p.expect_exact(PROMPT)
        self.finish(p)

    # -- history

    def test_history_file_is_written_and_recalled(self):
        p = self.start()
        p.sendline("echo first entry")
        p.expect_exact(PROMPT)
        self.finish(p)
        with open(self.history) as f:
            text = f.read()
        self.assertIn("echo\\040first\\040entry", text)
        p = self.start()
        p.send(UP)
        p.expect_exact("echo first entry")
        p.send("\r")
        p.expect(r"\r\nfirst entry\r\n")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_history_is_appended_per_line(self):
        p = self.start()
        p.sendline("echo one")
        p.expect_exact(PROMPT)
        p.sendline("echo two")
        p.expect_exact(PROMPT)
        # Still running: both lines are in the file already, each once.
        with open(self.history) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[-2:], ["echo\\040one", "echo\\040two"])
        self.finish(p)

    # -- Ctrl-C

    def test_ctrl_c_at_the_prompt_clears_the_line(self):
        p = self.start()
        p.send("echo abc")
        time.sleep(0.2)
        p.sendcontrol("c")
        p.expect_exact("^C")
        p.expect_exact(PROMPT)
        p.sendline("echo ok")
        p.expect(r"\r\nok\r\n")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_ctrl_c_cancels_the_command_not_the_process(self):
        p = self.start()
        p.sendline("sleep 30")
        time.sleep(0.5)
        start = time.time()
        p.sendcontrol("c")
        p.expect_exact("^C cancelled: sleep stopped early")
        self.assertLess(time.time() - start, 5)
        p.expect_exact(PROMPT)
        p.sendline("echo alive")
        p.expect_exact("alive")
        p.expect_exact(PROMPT)
        self.finish(p)

    def test_ctrl_c_in_a_one_shot_command_exits_130(self):
        p = self.spawn("-c", "sleep 30; echo never")
        time.sleep(0.5)
        p.sendcontrol("c")
        p.expect_exact("cancelled: sleep stopped early")
        p.expect(pexpect.EOF)
        self.assertNotIn("never", p.before)
        p.close()
        self.assertEqual(p.exitstatus, 130)

    @unittest.skipUnless(os.path.exists(MODEL), "needs " + MODEL)
    def test_ctrl_c_during_a_long_prefill_keeps_the_session(self):
        # About 6000 tokens in blocks of 256: progress shows on stderr, Ctrl-C stops between
        # blocks, and the context keeps exactly the blocks that ran.
        long = os.path.join(self.dir, "long.kvl")
        with open(long, "w") as f:
            f.write('feed text "' + "The keeper counted the boats in the harbour. " * 600 + '"\n')
        p = self.start(timeout=120)
        p.sendline("load " + MODEL)
        p.expect_exact("loaded ")
        p.expect_exact(PROMPT)
        p.sendline("budget 512 tokens")
        p.expect_exact(PROMPT)
        p.sendline("prefill mode=capped block=256")
        p.expect_exact(PROMPT)
        p.sendline("replay long.kvl")
        p.expect(r"prefill (\d+) of (\d+) tokens")
        p.sendcontrol("c")
        p.expect(r"\^C cancelled: prefill stopped after (\d+) of (\d+) tokens")
        done, total = int(p.match.group(1)), int(p.match.group(2))
        self.assertGreater(total, 5000)
        self.assertLess(done, total)
        p.expect_exact(PROMPT)
        p.sendline("show tokens")
        p.expect(r"context: (\d+) tokens")
        self.assertEqual(int(p.match.group(1)), done)
        p.expect_exact(PROMPT)
        p.sendline('ask "How many?" max=3')
        p.expect_exact(PROMPT)
        p.sendline("echo alive")
        p.expect_exact("alive")
        p.expect_exact(PROMPT)
        self.finish(p)

    @unittest.skipUnless(os.path.exists(MODEL), "needs " + MODEL)
    def test_ctrl_c_cancels_generation(self):
        p = self.start(timeout=120)
        p.sendline("load " + MODEL)
        p.expect_exact("loaded ")
        p.expect_exact(PROMPT)
        p.sendline('ask "Write a long story about a dragon." max=2000')
        time.sleep(3)
        p.sendcontrol("c")
        p.expect(r"\^C cancelled: generation stopped after \d+ tokens")
        p.expect_exact(PROMPT)
        p.sendline("echo alive")
        p.expect_exact("alive")
        p.expect_exact(PROMPT)
        self.finish(p)


def readme_tour():
    """The commands of the README's tour as printed (the first `text` block under "A short
    tour"), each with the output lines printed under it: (command, [lines])."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## A short tour", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    steps = []
    for line in block.splitlines():
        prompt = next((q for q in (PROMPT, "kvlab rec> ") if line.startswith(q)), None)
        if prompt:
            steps.append((line[len(prompt):], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


class ReadmeTour(PtyCase):
    """The README's tour typed at the prompt as printed, in a folder holding the models: every
    command comes back to the prompt without an error line, and the output lines the README
    shows under a command appear in that order (a changed README or a broken tour fails here)."""

    @unittest.skipUnless(os.path.exists(MODEL), "needs " + MODEL)
    def test_the_readme_tour_runs_as_printed(self):
        steps = readme_tour()
        self.assertGreater(len(steps), 20, "the tour has its commands")
        os.symlink(os.path.join(ROOT, "models"), os.path.join(self.dir, "models"))
        # Wide enough that no typed line wraps (libedit would redraw it).
        p = self.start(timeout=180, columns=400)
        for command, shown in steps:
            p.sendline(command)
            # The echo of the typed line first, so the output is this command's (up to its
            # comment: libedit may not echo a comment's non-ASCII characters, such as '…').
            p.expect_exact(command.split(" #", 1)[0].rstrip())
            for line in shown:
                p.expect_exact(line)
            # While recording, the prompt says so.
            p.expect_exact([PROMPT, "kvlab rec> "])
            self.assertNotIn("error:", p.before, f"{command!r} printed an error:\n{p.before}")
        self.finish(p)


def main():
    global BINARY
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit("usage: test_interactive.py KVLAB_BINARY [unittest options]")
    BINARY = os.path.abspath(args[0])
    unittest.main(argv=[sys.argv[0]] + args[1:])


if __name__ == "__main__":
    main()
