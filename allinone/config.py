"""The one typed configuration of a run. Every setting lives here, with its trade-off beside it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DetectConfig:
    # Path to a .onnx (YOLOX, ONNX Runtime) or a .pt file / ultralytics model name (e.g. "yolo11n.pt").
    # Empty: the default detector from the checkpoints folder (downloaded on first use).
    model: str = ""
    # Detections below this never reach the tracker. Low on purpose: ByteTrack's second association stage
    # recovers occluded people from low-score boxes; raising it loses them, lowering it costs NMS time.
    score_threshold: float = 0.1
    # IoU above which two person boxes are the same person (class-wise NMS). Lower merges people walking close.
    nms_iou: float = 0.45
    # Boxes smaller than this many pixels in height are dropped: they are too small for a useful silhouette.
    min_box_height: float = 0.0
    # Frames detected together in one call (then tracked one by one, in order). 0: 8 on CUDA, where batches keep the
    # GPU busy, and 1 on the CPU, where they gain nothing. Larger batches hold that many frames in memory.
    batch: int = 0


@dataclass(frozen=True)
class TrackConfig:
    # Detections at or above this score take part in the first association and may start tracks (ByteTrack's
    # track_thresh). Higher: fewer false tracks, more id switches through occlusions.
    high_threshold: float = 0.5
    # Detections between low_threshold and high_threshold are used only in the second association, to keep
    # existing tracks alive through occlusion; below it they are ignored.
    low_threshold: float = 0.1
    # A new track needs a detection this confident (ByteTrack: track_thresh + 0.1). Higher: fewer ghost tracks.
    new_track_threshold: float = 0.6
    # IoU-distance gate of the first association (1 - IoU). Higher lets fast movers match, but risks swaps.
    match_threshold: float = 0.8
    # IoU-distance gate of the second association (low-score boxes); stricter because those boxes are noisier.
    second_match_threshold: float = 0.5
    # IoU-distance gate for confirming a track seen in one frame only.
    unconfirmed_match_threshold: float = 0.7
    # Frames (at 30 fps) a lost track is kept for re-identification. Longer bridges longer occlusions but may
    # hand a lost id to a different person. Scaled by fps / 30 so it means the same time at any frame rate.
    track_buffer: int = 30
    # Multiply IoU similarity by detection score before matching (ByteTrack does this outside MOT20).
    fuse_score: bool = True
    # Tracks shorter than this (in frames) are dropped from results: mostly false positives.
    min_track_frames: int = 1


@dataclass(frozen=True)
class SegmentConfig:
    # PaddleSeg inference folder (deploy.yaml + model.pdmodel + model.pdiparams) or a .onnx file.
    # Empty: PP-HumanSeg v2 from the checkpoints folder (downloaded on first use).
    model: str = ""
    # Person probability above which a pixel is foreground. 0.5 is the argmax of a 2-class softmax, which is
    # what PaddleSeg's own predictor does; lower fattens silhouettes, higher erodes limbs.
    threshold: float = 0.5
    # Fraction of the box added on each side before cropping; gives the segmenter context around the person.
    box_pad: float = 0.1
    # Gray level of the square canvas the crop is centered on (255 = white, like the reference silhouettes).
    canvas_value: int = 255
    # Segment every n-th frame of a track. 1 = every frame (best embeddings); 2 halves segmentation time.
    frame_step: int = 1
    # Crops per segmenter call. Larger batches amortize per-call overhead; memory grows linearly.
    batch_size: int = 16
    # Silhouette frame rate the gait models were trained on (CASIA-B, OU-MVLP, GREW: 25-30 frames/s). Video faster
    # than 1.5x this (50/60 fps) is segmented every round(fps / target_fps)-th frame of a track, so temporal models
    # (GaitPart, GaitGL, DeepGaitV2) see steps of the speed they learnt. 0 turns it off.
    target_fps: float = 30.0


@dataclass(frozen=True)
class QualityConfig:
    """Which tracked boxes are not worth a silhouette. Each dropped frame is counted per track and reason in run.json.

    Limits chosen by measurement on the shared videos (README, "Silhouette quality").
    """

    # A box within this many pixels of the frame's edge is cut by it: the alignment would stretch a part body.
    border_margin: float = 2.0
    # A box more than this share of whose area lies under the box of a person in front (a box reaching lower in
    # the picture, i.e. nearer the camera on a ground plane) is occluded. Lower drops more frames of crossing people.
    max_covered: float = 0.25
    # Drop boxes below the tracker's high threshold: ByteTrack keeps those only to bridge occlusions.
    drop_low_score: bool = True
    # Keep only the part of the mask inside the person's own box and outside the boxes of people in front of them.
    clip_mask: bool = True


@dataclass(frozen=True)
class PoseConfig:
    # A keypoint model: a MoveNet .tflite (LiteRT) or a top-down .onnx (SimCC, heatmap or [N, 17, 3] output). Empty:
    # no pose stage, unless the gait model reads keypoints (then RTMPose-m from the checkpoints folder).
    model: str = ""
    # The person box is grown by this factor around its centre before the crop (mmpose's top-down padding 1.25):
    # feet and raised hands stay inside the crop. (The people of one frame are one model call where the backend
    # batches, ONNX; MoveNet's TFLite graph takes one crop per call.)
    box_scale: float = 1.25
    # Keep the keypoints of every track as OpenGait's pose pickles (keypoints/<video>/<track>.pkl, float32
    # [T, 17, 3]: x, y in frame pixels, confidence).
    save: bool = False


@dataclass(frozen=True)
class SkeletonConfig:
    """How a keypoint gait model (GaitGraph) turns a track's keypoints into one embedding (gait/skeleton.py)."""

    # Frames per window: GaitGraph trained and evaluates on 60-frame sequences (its SelectSequenceCenter(60)).
    window: int = 60
    # Windows start every `stride` frames; the track's embedding is the mean of its windows' L2-normalised
    # embeddings, normalised again. Half a window: every frame is in one or two windows.
    stride: int = 30
    # A track with fewer frames than `window` is one window of its own length (the network is convolutional in
    # time and pools over it); MatchConfig.min_frames still marks very short tracks too short to match.


@dataclass(frozen=True)
class GaitConfig:
    # OpenGait checkpoint ({'model': state_dict, ...}). Empty: GREW GaitBase from the checkpoints folder.
    model: str = ""
    # gaitbase | gaitset | gaitpart | gaitgl | deepgaitv2, or auto: recognised from the checkpoint's keys. Naming
    # one only adds a check (a checkpoint of another architecture is refused); auto never guesses between two.
    arch: str = "auto"
    # Frames fed to one forward pass: the first max_frames silhouettes of a track, in order (OpenGait's test-time
    # frames_all_limit, 720). A cap bounds memory and time on long tracks.
    max_frames: int = 720
    # Which embedding: embed_1 (the FCs output), embed_2 (the BNNeck output, DeepGaitV2 only, as OpenGait's
    # use_emb2), or auto: what OpenGait's released config for that checkpoint sets (gait/checkpoint.py).
    embedding: str = "auto"
    # Checkpoints are read with torch.load(weights_only=True), which runs no code from the file. A checkpoint that
    # pickles other objects too is refused unless this is set (full unpickling can run code: trusted files only).
    trust_checkpoint: bool = False
    # Half precision on CUDA only; never on CPU (slow there and not needed).
    fp16: bool = False
    # Tracks that end together (at the end of a video) embedded in one forward, equal lengths together. 0: 8 on
    # CUDA, 1 on the CPU (where batching measured slower).
    batch: int = 0
    # Keypoint models (GaitGraph): windows over a track's keypoints.
    skeleton: SkeletonConfig = field(default_factory=SkeletonConfig)


@dataclass(frozen=True)
class MatchConfig:
    # "auto": the distance the gait model is evaluated with in OpenGait (euc for every model here), "euc" (mean
    # over parts of the per-part euclidean distance) or "cos". A run records the resolved one.
    metric: str = "auto"
    # A probe track may only take an identity within this distance. None = auto: the threshold for target_fpir
    # from the impostor evidence (people seen together, different gallery identities, a calibration file); with
    # none, nothing is matched (decide/threshold.py, README "The threshold").
    threshold: float | None = None
    # Tracks with fewer usable (aligned) silhouettes than this are "too_short" and not matched.
    min_frames: int = 10
    # auto threshold: the false-positive identification rate it aims for over this gallery's size, and how many
    # frames two tracks must share to count as two people seen together (a few frames guard against a track
    # handed between people).
    target_fpir: float = 0.01
    auto_min_overlap: int = 5
    # A calibration file (python main.py calibrate) whose impostor distances join the evidence. Empty: the one
    # beside the gait checkpoint (<stem>.calibration.json), if any.
    calibration: str = ""
    # The assignment's integer program (decide/assign.py) is exact up to this many seconds per probe video; a dense
    # crowd over a long video can take minutes more, so past it the best assignment found (or the rounded linear
    # relaxation, if better) is taken and its gap to the optimum's bound is recorded in run.json "assignment".
    solve_seconds: float = 10.0
    # A decision's ranking (run.json, matches.csv, the report's runners-up) keeps its nearest this many identities;
    # every distance is in the binary file beside run.json (distances.npz), read by tools and the heat map.
    ranking_kept: int = 10


@dataclass(frozen=True)
class EvidenceConfig:
    """When compare's report may call the gait checkpoint validated (decide/lr_model.py checkpoint_validation): its
    LR model file must hold a held-out validation (cross-validation by identity) of this very checkpoint over at
    least `min_identities` people with a held-out Cllr below `max_cllr` (1 is an LR that says nothing; a lab sets
    its own bar here). Fewer people cannot show how LRs behave for people not in the data."""

    min_identities: int = 50
    max_cllr: float = 0.5


@dataclass(frozen=True)
class SearchConfig:
    """How an enrolled gallery is searched (gallery/search.py)."""

    # Galleries with at most this many tracks are searched exactly (every identity measured): fast enough below it.
    exact_limit: int = 20_000
    # Above it, a bound index finds every identity within the threshold; beyond the threshold (the ranking, the
    # nearest of an unknown person) the `shortlist` tracks of smallest lower bound per probe are measured too.
    shortlist: int = 200
    # Dimensions per part the bound keeps (plus one): more make the bound tighter (fewer tracks measured) and the
    # index larger, (bound_dims + 1) * parts * 4 bytes a track.
    bound_dims: int = 15
    # The index's projections and lists are trained on this many tracks drawn at random with this seed.
    sample: int = 50_000
    seed: int = 0
    # Lists the index splits the tracks into (k-means; each track keeps its distance to its list's centre, for the
    # triangle-inequality bound); 0: gallery/search.py default_lists (16 sqrt(tracks), at most one per 6 sample
    # tracks and at most 8,192).
    lists: int = 0


@dataclass(frozen=True)
class LiveConfig:
    """Decisions on a live stream, made while it plays (sliding window over each track's latest silhouettes)."""

    # A track's first decision comes once it has this many silhouettes (1 s at 30 fps). Fewer decide sooner but on
    # less of the walk (OpenGait's test sequences are several seconds); more delay the first answer.
    window_min: int = 30
    # It is decided again every `step` new silhouettes, on its latest `window` silhouettes. A smaller step follows
    # changes sooner and costs one gait forward per step; a longer window gives steadier embeddings and adapts slower.
    step: int = 15
    window: int = 60
    # Stop after this many seconds (0: when the stream ends or on Ctrl-C).
    duration_s: float = 0.0
    # Keep reconnecting a dropped stream for this long (backoff 0.5 s doubling to 8 s) before ending the run.
    reconnect_s: float = 30.0
    # A camera that does not answer at the start: False (a run's --probe) stops before any model loads, with one
    # line; True (the watch service) reports it and keeps trying (backoff doubling to 30 s) while the others run.
    retry_unanswered: bool = False
    # Events, MOT rows and the result video start a new file every this many seconds of wall time (an hour: a day
    # is 24 files of each; shorter segments lose less of the video to a crash but make more files).
    segment_s: float = 3600.0
    # The result video being written starts a keyframe (and so a new fragment in the file) at least this often, in
    # wall time and in frames at the stream's rate: a killed run loses at most about this much of it. Shorter
    # loses less and makes the file larger (each keyframe costs several frames' bytes).
    keyframe_s: float = 1.0
    # Each ended track's row (span, files, final decision: ~1.6 KB) is kept for run.json and the report; beyond this
    # many per camera the oldest rows leave memory, so a camera watched for days stays flat (their final events stay
    # in the events files, and the watch service's sightings in its database). run.json's live stats count them
    # (tracks_let_go). Larger keeps a longer session whole in run.json and the report, at that cost per track.
    tracks_kept: int = 5000


@dataclass(frozen=True)
class OutputsConfig:
    """Where decision events go besides the run folder (allinone/sinks/): an MQTT broker and webhooks."""

    # mqtt://host[:port]/prefix: each event on PREFIX/events and PREFIX/<stream>/events (QoS 1). Empty: none.
    mqtt: str = ""
    # URLs each event is POSTed to as JSON.
    webhooks: tuple[str, ...] = ()
    # Events a sink holds while its broker or server is slow or away; when full the oldest is dropped (counted in
    # run.json "sinks"). Larger rides out longer outages and holds more memory (an event is about 300 bytes).
    queue_size: int = 1000
    # At the run's end each sink gets this long to deliver what it holds; then the rest counts as dropped, so a
    # dead sink delays the end of a run by at most this much.
    close_wait_s: float = 5.0
    # A webhook POST is tried this many times more after a failure (connection refused, timeout, HTTP 5xx, 408 or
    # 429), waiting retry_backoff_s, then twice that, ..., at most retry_backoff_max_s between tries.
    retries: int = 3
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 8.0
    # Seconds a webhook server has to answer one POST.
    http_timeout_s: float = 5.0
    # paho reconnects to a broker that went away, waiting 1 s doubling up to this many seconds between tries.
    mqtt_reconnect_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.close_wait_s < 0 or self.retries < 0 or self.retry_backoff_s < 0 \
                or self.http_timeout_s <= 0 or self.mqtt_reconnect_max_s < 1:
            raise ValueError(f"bad outputs settings: {self}")


@dataclass(frozen=True)
class RunConfig:
    gallery: Path | None  # a gallery video, or None with gallery_db
    probes: tuple[Path, ...]
    output: Path = Path("output")
    name: str | None = None  # run folder name; a timestamp when None
    device: str = "auto"  # auto | cpu | cuda
    quiet: bool = False
    # Detect and track only: no silhouettes, embeddings or matching (and no segmentation/gait weights needed).
    track_only: bool = False
    # Where default weights live (None: $ALLINONE_CHECKPOINTS, else checkpoints/ beside the package).
    checkpoints: Path | None = None
    # Fetch missing default weights. False: fail at once with the list of files to place by hand.
    download: bool = True
    # What is kept of the silhouettes: "pkl" one OpenGait pickle per track (aligned uint8 [T, 64, 64]); "png" also
    # every raw mask as a PNG (one file per person per frame: large on long footage); "none" neither.
    save_silhouettes: str = "pkl"
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    gait: GaitConfig = field(default_factory=GaitConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    # Named gallery identities: (name, gallery track ids). Tracks not named are identities of their own, "G<id>".
    identities: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # An enrolled gallery (SQLite file, gallery/store.py) used in place of a gallery video: no gallery video is processed.
    gallery_db: Path | None = None
    # Draw the tracked and result videos. Off for enrolment. The gallery's tracked video is drawn during its first
    # pass; a probe's result video needs the decisions, so it takes a second decode of the probe after them.
    render: bool = True
    # Also a tracked video of each probe (box and P<id>, one color per track), drawn in the first pass: one more
    # H.264 encode per probe frame (about as much as the detector on a 720p frame on the CPU) for what the result
    # video already shows with the decisions. Probes of a --track-only run always get it (they have no result video).
    tracked_probe_videos: bool = False
    # Turn video frames clockwise: "auto" honours the container's rotation tag and, where there is none and nobody is
    # found upright in a sample of frames, tries the quarter turns (with a warning); or "0", "90", "180", "270".
    rotate: str = "auto"
    live: LiveConfig = field(default_factory=LiveConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    # The live probes' names in the run folder, in order (the watch service's camera names); () names each from its
    # address (rtsp://host/cam/hall → hall).
    camera_names: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """Settings as JSON-ready values (for run.json)."""
        def conv(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v
        out = conv(asdict(self))
        # sink addresses may carry a password or a token (user:pass@, ?key=): run.json keeps where, not how
        out["outputs"]["mqtt"] = _without_secrets(self.outputs.mqtt)
        out["outputs"]["webhooks"] = [_without_secrets(u) for u in self.outputs.webhooks]
        return out


def _without_secrets(url: str) -> str:
    """``url`` without its user, password, query and fragment."""
    from urllib.parse import urlsplit
    if not url:
        return url
    try:
        p = urlsplit(url)
        host = (p.hostname or "") + (f":{p.port}" if p.port else "")
    except ValueError:
        return "(not shown)"
    return f"{p.scheme}://{host}{p.path}"
