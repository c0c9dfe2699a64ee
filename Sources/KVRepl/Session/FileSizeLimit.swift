import Foundation

/// The file size limit (`ulimit -f`, RLIMIT_FSIZE). By default a write past it kills the process
/// with SIGXFSZ, losing the session; ignored, the write fails with EFBIG instead and every writer
/// reports it as its command's error (`error: logits: x.npy: file too large`), so the session
/// goes on.
public enum FileSizeLimit {
  /// Sets SIGXFSZ to be ignored, for the whole process. Called once at start by the `kvlab`
  /// executable, whatever it runs (the prompt, a script, -c, --serve).
  public static func reportAsErrors() {
    signal(SIGXFSZ, SIG_IGN)
  }
}
