import Foundation
import KVEngine
import KVModels

/// `feed frames VIDEO`: plans the frames (ffprobe), streams them through ffmpeg into the
/// budgeted prefill, and shows progress in video time with an estimate of the rest.
enum VideoFeed {
  static func run(_ ctx: CommandContext, typed: String, path: String, every: Int, max: Int?) throws
  {
    func time(_ name: String) throws -> Double? {
      guard let text = ctx.args.string(name) else { return nil }
      guard let t = Frames.parseClock(text) else {
        throw ctx.error("\(name)=\(text): expected seconds (90, 12.5) or [h:]mm:ss (1:30)")
      }
      return t
    }
    let selection = VideoSelection(
      fps: ctx.args.number("fps"), every: every, max: max, start: try time("start"),
      end: try time("end"))
    let plan = try VideoPlan.probe(path, selection: selection)
    let clip = VideoClip(plan)
    let started = Date()
    let total = plan.frameCount
    let last = plan.promptTimes.last ?? 0
    clip.onFrame = { i in
      let elapsed = Date().timeIntervalSince(started)
      let left = elapsed / Double(i + 1) * Double(total - i - 1)
      ctx.progress(
        "feed frames: frame \(i + 1) of \(total), video \(Frames.clock(plan.promptTimes[i])) of \(Frames.clock(last)), \(Int(elapsed)) s, about \(Int(left.rounded())) s left"
      )
    }
    defer { clip.onFrame = nil }
    let report = try ctx.session.feedVideo(clip, times: ctx.args.toggle("times"))
    VisionCommands.printFeed(
      ctx, what: "\(total) frames of \(typed)", report, unit: VisionCommands.unitName(ctx.session))
    if ctx.args.toggle("timing") {
      // Frames: waiting for ffmpeg (decoding not hidden behind the prefill), then the rest of
      // getting pixels (the processor's resize and normalisation); the vision tower; the rest.
      let wait = clip.decodeWaitSeconds
      ctx.print(
        "time: ffmpeg wait \(Mask.seconds(wait)), frame preprocessing \(Mask.seconds(Swift.max(0, report.pixelSeconds - wait))), vision tower \(Mask.seconds(report.visionSeconds)), decoder \(Mask.seconds(Swift.max(0, report.seconds - report.pixelSeconds - report.visionSeconds)))"
      )
    }
  }
}
