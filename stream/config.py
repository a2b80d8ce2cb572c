"""`sightline run` configuration: pydantic models (validated, strict) plus checks that need the disk."""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache, partial
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from sightline.model.backends import missing_extra
from sightline.model.echo import bounded
from sightline.model.errors import ConfigError
from sightline.model.limits import MAX_RESIZE
from sightline.model.yamlconfig import StrictModel, load_yaml, read_yaml, validate
from sightline.stream.event_config import MIN_BACKOFF_S, MIN_TIMEOUT_S, BackoffConfig, EventsConfig
from sightline.stream.passwords import hash_problem
from sightline.stream.urls import (  # noqa: F401  (redact_url and the scheme lists are re-exported)
    NAME_PATTERN,
    NETWORK_SCHEMES,
    WEBRTC_SCHEME,
    SchemeRe,
    StreamUrl,
    parse_stream_url,
    redact_url,
)

LIVE_BUFFER = 2  # measured on the CPU: 2 halves p50 latency against 4 at the same classified fps
FAST_BUFFER = 32


def auto_or_count(value: int | str, most: int) -> int | str:
    """'auto' or a whole number from 1 to ``most``."""
    if value != "auto" and not 1 <= value <= most:
        raise ValueError(f"must be 'auto' or 1-{most}")
    return value


Lanes = Annotated[int | Literal["auto"], AfterValidator(partial(auto_or_count, most=64))]
BatchSize = Annotated[int | Literal["auto"], AfterValidator(partial(auto_or_count, most=1024))]


class ModelConfig(StrictModel):
    source: str = Field("imagenet", description="'imagenet', a Sightline bundle or a torchvision .pth")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto", description="auto: per backend (torch: fp16 on CUDA; torch and openvino on a CPU: bf16 where it "
                            "runs it natively, else fp32); int8 needs a compiled backend and calibration images")
    backend: Literal["auto", "torch", "openvino", "onnxruntime", "tensorrt"] = Field(
        "torch", description="torch (the reference), a compiled backend built next to the bundle on first use, or "
                             "auto: the fastest installed for the device (see `sightline export`)")
    calibrate: str | None = Field(None, description="int8: image folder or video to calibrate on (default: the "
                                                    "bundle's own train/ folder)")
    topk: int = Field(5, ge=1, le=100)
    compile: bool = Field(False, description="torch.compile the network (slower start, faster steady state)")
    cuda_graphs: bool = Field(False, description="CUDA only: capture one CUDA graph per batch bucket at warm-up "
                                                 "(fewer kernel launches per batch)")
    swap_dir: str | None = Field(None, description="PUT /api/model loads model files only from this folder (and "
                                                   "below); default: the folder of model.source. 'imagenet' is "
                                                   "always allowed (docs/model-swap.md)")
    load_timeout_s: float = Field(60.0, ge=1, le=3600,
                                  description="a model swap whose model has not loaded in this time fails (422) "
                                              "and frees the swap for the next one")
    max_resize: int = Field(1024, ge=16, le=MAX_RESIZE,
                            description="largest preprocess.resize a served model may ask for (at start and on a "
                                        "swap): each frame is resized to it, so a bundle asking for 4000 would "
                                        "cut every stream's frame rate; ImageNet's is 256")
    workers: Lanes = Field(
        "auto", description="inference lanes sharing the model; auto: 2 on a CPU when a fast stream is configured "
                            "(each on half the cores: more frames/s, longer per batch), else 1")

    @model_validator(mode="after")
    def _compiled_lanes(self) -> ModelConfig:
        if self.compile and self.workers not in ("auto", 1):
            raise ValueError("workers: a torch.compile'd network runs in one lane (use workers: 1 or auto)")
        if self.precision == "int8" and self.backend == "torch":
            raise ValueError("precision: int8 needs a compiled backend (backend: openvino, onnxruntime or tensorrt)")
        if self.compile and self.backend not in ("torch", "auto"):
            raise ValueError("compile: torch.compile applies to the torch backend only")
        return self

    @field_validator("backend")
    @classmethod
    def _backend_installed(cls, v: str) -> str:
        if (missing := missing_extra(v)) is not None:
            raise ValueError(missing)
        return v


CPU_MAX_BATCH = 8  # measured on 2 cores: as many frames/s as 32, a quarter of the time per batch
GPU_MAX_BATCH = 32


class BatchingConfig(StrictModel):
    max_batch: BatchSize = Field(
        "auto", description=f"most frames per model call; auto: {GPU_MAX_BATCH} on a GPU, {CPU_MAX_BATCH} on a CPU")
    max_wait_ms: float = Field(10.0, ge=0, le=10_000)

    def batch_size(self, device_type: str) -> int:
        if self.max_batch != "auto":
            return self.max_batch
        return CPU_MAX_BATCH if device_type == "cpu" else GPU_MAX_BATCH


class SmoothingConfig(StrictModel):
    ema: float = Field(0.6, ge=0, lt=1, description="weight of the past in the probability EMA (0 = none)")
    hysteresis: float = Field(0.1, ge=0, le=1,
                              description="relative margin: a new top label replaces the shown one when its "
                                          "smoothed probability exceeds (1 + hysteresis) x the shown one's")


class ReconnectConfig(BackoffConfig):
    """A stream's reconnect backoff: the events outputs' one (max_s at least initial_s), plus jitter."""

    initial_s: float = Field(0.5, ge=MIN_BACKOFF_S, le=60, description="first wait after a failure")
    jitter: float = Field(0.25, ge=0, le=1, description="random share taken off each delay")


@lru_cache(maxsize=1024)
def _single_input(url: str, transport: Literal["tcp", "udp"], roles: tuple[Role, ...]) -> InputConfig:
    """The single-URL form's one input (built, not validated: the stream's url was checked, and may be a file)."""
    return InputConfig.model_construct(name=SINGLE_INPUT, url=url, roles=list(roles), transport=transport)


@lru_cache(maxsize=4096)
def _parsed_url(url: str) -> StreamUrl:
    return parse_stream_url(url)  # a frozen dataclass: safe to share


Role = Literal["classify", "record", "view"]
ROLES: tuple[Role, ...] = ("classify", "record", "view")
SINGLE_INPUT = "main"  # the one input of the single-URL form


class InputConfig(StrictModel):
    """One of a camera's streams (a main stream, a substream) and what the stream uses it for."""

    name: str | None = Field(None, pattern=NAME_PATTERN,
                             description="names the input in status and metrics; default: its roles joined with '+'")
    url: str = Field(min_length=1, description="a network URL (rtsp://, rtmp://, http(s)://, srt://, udp://, tcp://), "
                                                "checked whole as a stream's url")
    roles: list[Role] = Field(min_length=1, description="classify (decoded, batched, classified), record "
                                                        "(passthrough segments, never decoded), view (what previews, "
                                                        "WebRTC viewers and publishing show, labels drawn)")
    transport: Literal["tcp", "udp"] | None = Field(None, description="RTSP transport; default: the stream's")

    @field_validator("url")
    @classmethod
    def _network_url(cls, url: str) -> str:
        if parse_stream_url(url).kind != "network":  # UrlError is a ValueError that never quotes the URL
            raise ValueError("an input is a camera's network stream (rtsp://, rtmp://, http(s)://, srt://, udp://, "
                             "tcp://); files, devices and webrtc:// take the single url form")
        return url

    @field_validator("roles")
    @classmethod
    def _roles_once(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is listed twice")
        return sorted(roles, key=ROLES.index)

    @property
    def label(self) -> str:
        """The input's name: given, or its roles ("classify", "record+view")."""
        return self.name or "+".join(self.roles)


class StreamConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    url: str | None = Field(None, min_length=1,
                            description="file path, rtsp://, rtmp://, http(s)://, srt://, udp://, tcp://, /dev/videoN, "
                                        "or webrtc://<label> (a peer publishes through the API); checked whole "
                                        "(scheme, host, port 1-65535, path). Or inputs:")
    inputs: list[InputConfig] | None = Field(
        None, min_length=1, max_length=8,
        description="instead of url: a camera's streams, each with roles (exactly one classify; record and view at "
                    "most once; view defaults to the classify input). docs/inputs.md")
    view: Literal["annotated", "remux"] = Field(
        "annotated", description="what WebRTC viewers and publishing get: annotated (the view input decoded, labels "
                                 "drawn, encoded) or remux (the view input's own H.264 packets, no labels, nothing "
                                 "decoded or encoded); previews always draw the labels. docs/inputs.md")
    clips_from: Literal["record", "classify"] | None = Field(
        None, description="the input event clips come from: record (full resolution, remuxed, nothing decoded) or "
                          "classify (annotated frames); default: record when the stream records an input of its own")
    mode: Literal["realtime", "fast"] = Field(
        "realtime", description="files: realtime paces at the native frame rate; fast is lossless, as fast as the "
                                "model goes. Network sources are always realtime.")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")
    loop: bool = False
    record: bool | Literal["passthrough", "annotated"] = Field(
        False, description="record the stream: passthrough (true) remuxes the camera's own packets (no decode or "
                           "encode); annotated re-encodes every frame with the labels drawn. A stream that runs until "
                           "stopped records in segments (storage.recordings.segment_s), a file without loop to "
                           "output_dir/<name>.mp4. docs/recordings.md")
    infer_fps: float | None = Field(None, gt=0, le=1000, description="classify at most this many frames per second")
    decode: Literal["auto", "all", "keyframes"] = Field(
        "auto", description="auto: decode only keyframes while infer_fps is at most the stream's keyframe rate and "
                            "nothing attached needs every frame (a recording, publishing, a video viewer, an event "
                            "clip being written), all frames otherwise; all: every frame; keyframes: only keyframes "
                            "(classifies at most one frame per GOP). docs/density.md")
    buffer: int | None = Field(None, ge=1, le=10_000,
                               description="frames held between decode and batching; default 2 for realtime "
                                           "(latency), 32 for fast (batching)")
    open_timeout_s: float = Field(10.0, ge=MIN_TIMEOUT_S, le=600)
    stall_timeout_s: float = Field(10.0, ge=MIN_TIMEOUT_S, le=600, description="no packet for this long -> reconnect")
    reconnect: ReconnectConfig = ReconnectConfig()
    hwaccel: Literal["auto", "off"] = Field(
        "auto", description="auto: NVDEC decode when the model runs on CUDA and FFmpeg can open the GPU "
                            "(software otherwise, said once in the log); off: always software")

    publish: str | None = Field(None, description="push the annotated video to a media server: rtsp://, rtsps://, "
                                                 "rtmp:// or rtmps:// (checked whole; docs/publishing.md)")

    @field_validator("url")
    @classmethod
    def _whole_url(cls, url: str | None) -> str | None:
        if url is not None:
            parse_stream_url(url)  # UrlError is a ValueError: a config error / 422 that never quotes the URL
        return url

    @model_validator(mode="after")
    def _inputs(self) -> StreamConfig:
        if (self.url is None) == (self.inputs is None):
            raise ValueError("give url or inputs (a camera's streams with roles), not both" if self.url
                             else "url or inputs is required")
        if self.inputs is None:
            if self.clips_from == "record":
                raise ValueError("clips_from: record needs an input with the record role (inputs:); a stream with "
                                 "one url makes its clips from the frames it classifies")
            return self
        for role in ROLES:
            holders = [i for i, inp in enumerate(self.inputs) if role in inp.roles]
            if len(holders) > 1:
                raise ValueError(f"inputs: the {role} role is given to inputs {holders[0]} and {holders[1]}; "
                                 "each role goes to one input")
            if role == "classify" and not holders:
                raise ValueError("inputs: one input needs the classify role (the one decoded and classified)")
        names = [inp.label for inp in self.inputs]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"inputs[{i}]: the name {name!r} is taken by another input; give each a name")
        urls = [inp.url for inp in self.inputs]
        for i, url in enumerate(urls):
            if url in urls[:i]:
                raise ValueError(f"inputs[{i}] has the same url as inputs[{urls.index(url)}]: give that input "
                                 "both roles instead")
        if self.record is not False:
            raise ValueError("record: with inputs, the record role says which input is recorded (passthrough); "
                             "remove record:")
        if self.clips_from == "record" and self.record_input is None:
            raise ValueError("clips_from: record needs an input with the record role")
        return self

    @field_validator("publish")
    @classmethod
    def _publish_url(cls, url: str | None) -> str | None:
        if url is not None and parse_stream_url(url).scheme not in PUBLISH_SCHEMES:
            raise ValueError(f"publish needs one of {', '.join(s + '://' for s in PUBLISH_SCHEMES)}")
        return url

    @model_validator(mode="after")
    def _mode(self) -> StreamConfig:
        if not self.is_file and self.mode == "fast":
            raise ValueError("mode 'fast' needs a file; live network sources are always realtime")
        if self.decode == "keyframes" and self.every_frame_output is not None:
            raise ValueError("decode: keyframes cannot feed an annotated recording or publishing (they need every "
                             "frame); use decode: auto, which decodes every frame while they are on, or record: "
                             "passthrough")
        if self.record_mode == "passthrough" and self.is_webrtc:
            raise ValueError("record: passthrough needs the camera's packets, and a webrtc:// peer's are decoded by "
                             "the peer connection; use record: annotated")
        if self.view == "remux" and self.is_webrtc and self.view_input.label == self.classify_input.label:
            raise ValueError("view: remux needs the camera's packets, and a webrtc:// peer's are decoded by the peer "
                             "connection; use view: annotated")
        if self.decode == "keyframes" and self.is_webrtc:
            raise ValueError("decode: keyframes does not apply to webrtc:// (the peer connection decodes every frame)")
        return self

    @property
    def source_url(self) -> str:
        """The URL the stream decodes and classifies: ``url``, or its classify input's."""
        return self.url if self.url is not None else self.classify_input.url

    @property
    def input_list(self) -> tuple[InputConfig, ...]:
        """The stream's inputs; the single-URL form is one input, "main", with every role it uses."""
        if self.inputs is not None:
            return tuple(self.inputs)
        roles: list[Role] = ["classify", "record", "view"] if self.record_mode else ["classify", "view"]
        return (_single_input(self.source_url, self.transport, tuple(roles)),)

    @property
    def classify_input(self) -> InputConfig:
        return next(i for i in self.input_list if "classify" in i.roles)

    @property
    def record_input(self) -> InputConfig | None:
        """The input recorded, or None when the stream records nothing."""
        return next((i for i in self.input_list if "record" in i.roles), None)

    @property
    def view_input(self) -> InputConfig:
        """What viewers see: the view input, else the classify input."""
        return next((i for i in self.input_list if "view" in i.roles), self.classify_input)

    @property
    def separate_inputs(self) -> tuple[InputConfig, ...]:
        """The inputs other than the classify input (each opened on its own connection)."""
        classify = self.classify_input
        return tuple(i for i in self.input_list if i is not classify)

    @property
    def clips_input(self) -> Literal["record", "classify"]:
        """Where event clips come from: the record input when it is a connection of its own, unless told."""
        if self.clips_from is not None:
            return self.clips_from
        record = self.record_input
        return "record" if record is not None and "classify" not in record.roles else "classify"

    def for_input(self, inp: InputConfig) -> StreamConfig:
        """A single-URL copy of this stream that opens ``inp`` (what a source thread is given)."""
        if self.inputs is None:
            return self
        # publishing goes with the view input: the classify input then never decodes every frame for it
        publish = self.publish if inp.label == self.view_input.label else None
        return self.model_copy(update={"url": inp.url, "inputs": None, "transport": inp.transport or self.transport,
                                       "clips_from": None, "publish": publish})

    @property
    def location(self) -> StreamUrl:
        """The parsed URL (cached per URL string: the watchdog and the sources ask every second, per stream)."""
        return _parsed_url(self.source_url)

    @property
    def is_network(self) -> bool:
        return self.location.kind == "network"

    @property
    def is_device(self) -> bool:
        """Only /dev/videoN is a camera; any other path is a file, checked against media_root."""
        return self.location.kind == "device"

    @property
    def is_webrtc(self) -> bool:
        return self.location.kind == "webrtc"

    @property
    def is_file(self) -> bool:
        return self.location.kind == "file"

    @property
    def capacity(self) -> int:
        """Live streams hold few frames (each one waiting is latency); fast streams hold enough to batch."""
        if self.buffer is not None:
            return self.buffer
        return LIVE_BUFFER if self.live else FAST_BUFFER

    @property
    def record_mode(self) -> Literal["passthrough", "annotated"] | None:
        """How the stream is recorded: ``record: true`` is passthrough (the camera's packets, nothing decoded);
        with inputs, the record role is a passthrough recording of that input."""
        if self.inputs is not None:
            return "passthrough" if any("record" in i.roles for i in self.inputs) else None
        if self.record is False:
            return None
        return "passthrough" if self.record is True else self.record

    @property
    def runs_until_stopped(self) -> bool:
        """A camera, a WebRTC peer or a looping file: its outputs are segmented and rotated (docs/recordings.md);
        a file without loop ends by itself and writes one file per run at the plain names."""
        return not self.is_file or self.loop

    @property
    def every_frame_output(self) -> str | None:
        """The output of this stream's own config that takes every decoded frame, full size, for as long as the
        stream runs ("the recording", "publishing"), or None. A passthrough recording takes packets, not frames."""
        if self.record_mode == "annotated":
            return "the recording"
        return "publishing" if self.publish is not None and self.view == "annotated" else None

    @property
    def live(self) -> bool:
        """Live streams keep the newest frame and drop stale ones; fast file streams lose nothing."""
        return self.mode == "realtime"

    def file_path(self) -> Path:
        return Path(self.location.path)


class IceServerConfig(StrictModel):
    urls: list[str] = Field(min_length=1, description="stun:host:port or turn:host:port?transport=udp|tcp")
    username: str | None = None
    credential: str | None = None

    @field_validator("urls")
    @classmethod
    def _ice_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^(stun|stuns|turn|turns):[^\s]+$", url):
                raise ValueError(f"not a stun:, stuns:, turn: or turns: URL: {url[:80]!r}")
        return urls


class WebRtcConfig(StrictModel):
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list, description="STUN/TURN servers for WebRTC publishers; none by default (no traffic to a "
                                          "third party)")
    interfaces: list[str] | None = Field(
        None, description="IP addresses the service offers as ICE host candidates; default: 127.0.0.1 when the "
                          "server binds a loopback address, the bind address when it binds one address, every "
                          "non-loopback interface when it binds 0.0.0.0 or ::")

    @field_validator("interfaces")
    @classmethod
    def _addresses(cls, interfaces: list[str] | None) -> list[str] | None:
        if interfaces is not None:
            for address in interfaces:
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    raise ValueError(f"not an IP address: {address[:80]!r}") from None
        return interfaces


PUBLISH_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps")


class AnnotatedVideoConfig(StrictModel):
    """The annotated video sent to WebRTC viewers and publish targets: encoded once per stream (docs/publishing.md)."""

    height: int = Field(360, ge=90, le=2160, description="lines of the encoded video (width follows the aspect)")
    crf: int = Field(23, ge=0, le=51, description="libx264 constant rate factor (lower: better, more bits)")
    gop_s: float = Field(1.0, gt=0, le=10, description="seconds between keyframes")
    queue: int = Field(4, ge=1, le=256, description="frames waiting for the encoder; beyond, the oldest is "
                                                    "dropped and counted (inference never waits)")
    publish_queue: int = Field(64, ge=1, le=10_000, description="packets waiting for the media server; beyond, "
                                                               "dropped and counted until the next keyframe")
    max_viewers: int = Field(4, ge=0, le=1000, description="WebRTC viewers per stream at most (429 beyond)")
    connect_timeout_s: float = Field(30.0, ge=1, le=600,
                                     description="a WebRTC viewer not connected this long after its answer is dropped "
                                                 "(an offer without usable ICE candidates would hold a slot)")
    reconnect: ReconnectConfig = ReconnectConfig()


def _password_hash(value: str) -> str:
    problem = hash_problem(value)
    if problem is not None:
        raise ValueError(problem)  # never the value: it is a credential
    return value


def _networks(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{bounded(value, 64)!r} is not an address or a CIDR network") from None
    return values


class UserConfig(StrictModel):
    """Someone who logs in on /login (or sends HTTP Basic to a video URL): docs/security.md."""

    name: str = Field(pattern=NAME_PATTERN, description="the login name")
    password_hash: Annotated[str, AfterValidator(_password_hash)] = Field(
        description="made by `sightline hash-password` (PBKDF2-SHA256; never the password itself)")
    role: Literal["viewer", "admin"] = Field("viewer", description="viewer: watch and read; admin: also change")


class ServerConfig(StrictModel):
    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1, description="bind address; 0.0.0.0 only inside a container")
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = Field(None, min_length=1,
                              description="the admin credential: state-changing requests need 'Authorization: Bearer "
                                          "<token>' (the SIGHTLINE_TOKEN environment variable overrides it)")
    viewer_tokens: list[Annotated[str, Field(min_length=16)]] = Field(
        default_factory=list, description="bearer tokens of the viewer role: watch video, read events and statuses "
                                          "(SIGHTLINE_VIEWER_TOKEN adds one)")
    users: list[UserConfig] = Field(default_factory=list, description="who may log in on /login, with a role each")
    public_read: bool = Field(False, description="anyone who reaches the port may watch and read, also off loopback "
                                                 "(on purpose: a public camera)")
    metrics_token: str | None = Field(None, min_length=16,
                                      description="when set, /metrics and /api/cluster/targets (and each cluster "
                                                  "worker's metrics endpoint) need 'Authorization: Bearer <it>' "
                                                  "(SIGHTLINE_METRICS_TOKEN overrides it)")
    trusted_proxies: Annotated[list[str], AfterValidator(_networks)] = Field(
        default_factory=list, description="addresses or CIDR networks of reverse proxies whose X-Forwarded-For and "
                                          "X-Forwarded-Proto are believed (client address, TLS)")
    session_ttl_s: float = Field(12 * 3600.0, ge=60, le=30 * 86400, description="a login lasts this long")
    login_max_failures: int = Field(5, ge=1, le=1000, description="failed logins per client address within "
                                                                  "login_window_s before further tries are refused")
    login_window_s: float = Field(300.0, ge=1, le=86400, description="the window of login_max_failures (429 with "
                                                                     "Retry-After inside it)")
    ready_max_down_share: float = Field(0.5, ge=0, le=1,
                                        description="/readyz fails when more than this share of the running streams "
                                                    "is down (reconnecting or failed)")
    mjpeg_fps: float = Field(5.0, gt=0, le=30, description="frame rate of the MJPEG previews")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of previews and snapshots")
    max_preview_clients: int = Field(16, ge=1, le=1000, description="open MJPEG previews at most (503 beyond)")
    write_timeout_s: float = Field(10.0, ge=MIN_TIMEOUT_S, le=600,
                                   description="a client that reads nothing for this long while a response waits to "
                                               "be written (a stalled MJPEG viewer) is disconnected")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 ** 3,
                                description="largest request body (413 beyond), counted while it arrives")
    max_streams: int = Field(64, ge=1, le=10_000, description="streams at most, configured and added (429 beyond)")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides IP addresses, 'localhost' and the bind address "
                    "('.example.com' also accepts its subdomains); guards against DNS rebinding")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) allowed to POST/PUT/DELETE besides the service's own")
    insecure: bool = Field(False, description="allow a non-loopback bind without an admin credential (on purpose)")
    webrtc: WebRtcConfig = WebRtcConfig()

    @field_validator("users")
    @classmethod
    def _one_user_per_name(cls, users: list[UserConfig]) -> list[UserConfig]:
        names = [u.name for u in users]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"user names given twice: {', '.join(twice)}")
        return users


RAY_INSTALL_HINT = 'Ray is not installed: pip install "sightline[cluster]" (or pip install -e ".[cluster]")'


def ray_installed() -> bool:
    """Whether Ray can be imported here, without importing it (it is slow and starts threads)."""
    return find_spec("ray") is not None


class RayConfig(StrictModel):
    address: str | None = Field(
        None, min_length=1, description="Ray cluster to run on (`sightline run --ray` overrides it): auto joins the "
                                        "cluster of this machine, host:port or ray://host:port a given one, local "
                                        "starts a private one-machine cluster; none: no cluster (one process)")
    namespace: str = Field("sightline", pattern=NAME_PATTERN,
                           description="Ray namespace of the workers and the stream table (one per service)")
    dashboard_host: str | None = Field(
        None, description="local only: bind Ray's dashboard here (default: no dashboard); a joined cluster keeps "
                          "its own setting")

    @field_validator("address")
    @classmethod
    def _ray_installed(cls, v: str | None) -> str | None:
        if v is not None and not ray_installed():
            raise ValueError(RAY_INSTALL_HINT)
        return v


class ClusterConfig(StrictModel):
    """The service on a Ray cluster (docs/cluster.md); ignored without ``ray.address`` / ``--ray``."""

    ray: RayConfig = RayConfig()
    workers: int | Literal["auto"] = Field(
        "auto", description="pipeline workers; auto: one per GPU of the cluster, or on a CPU-only cluster as many "
                            "as its CPUs allow at cpus_per_worker each (more are started when nodes join)")
    cpus_per_worker: float = Field(1.0, gt=0, le=1024, description="CPUs a worker reserves on a CPU-only cluster")
    gpus_per_worker: float = Field(1.0, ge=0, le=8, description="GPUs a worker reserves when the cluster has GPUs")
    worker_fps: float | None = Field(
        None, gt=0, description="frames/s one worker can classify; default: measured at its start with full batches")
    default_stream_fps: float = Field(25.0, gt=0, le=1000,
                                      description="frames/s a stream asks for when it has no infer_fps and its "
                                                  "frame rate is unknown (network and WebRTC sources)")
    heartbeat_s: float = Field(1.0, ge=MIN_TIMEOUT_S, le=60, description="how often the controller checks its workers")
    worker_timeout_s: float = Field(5.0, ge=MIN_TIMEOUT_S, le=600,
                                    description="a worker that answers no check for this long is replaced")
    metrics_host: str | None = Field(None, description="address each worker's Prometheus endpoint binds; default "
                                                       "the worker node's Ray address")
    metrics_port: int = Field(0, ge=0, le=65535, description="port of each worker's Prometheus endpoint (0: any)")


class RecordingsConfig(StrictModel):
    segment_s: float = Field(60.0, ge=1, le=3600,
                             description="a recording of a stream that runs until stopped is cut into segments of "
                                         "about this long, each closed at the first keyframe after it")


class RotationConfig(StrictModel):
    max_mb: float = Field(64.0, gt=0, le=1_000_000, description="a prediction log or events.jsonl is rotated at "
                                                                "this size")
    max_s: float = Field(3600.0, ge=10, le=7 * 86400, description="... or when it is this old")

    @property
    def max_bytes(self) -> float:
        return self.max_mb * 1024 * 1024


class KindRetention(StrictModel):
    max_age_days: float | None = Field(None, gt=0, le=36500, description="files older than this are deleted "
                                                                         "(by their last write)")
    max_gb: float | None = Field(None, gt=0, le=1_000_000, description="over this total, the oldest go first")


class RetentionConfig(StrictModel):
    recordings: KindRetention = Field(KindRetention(max_age_days=7), description="recording segments (footage "
                                      "that overlaps an event is kept as long as the events' retention says)")
    events: KindRetention = Field(KindRetention(max_age_days=30), description="event clips and snapshots")
    predictions: KindRetention = Field(KindRetention(max_age_days=7), description="prediction logs")
    event_history: KindRetention = Field(KindRetention(max_age_days=90), description="events.jsonl and its "
                                         "rotated files")
    min_free_gb: float = Field(1.0, ge=0, le=1_000_000,
                               description="below this much free space on output_dir's volume, the oldest files "
                                           "of any kind go first (recordings before events)")
    interval_s: float = Field(60.0, ge=1, le=86400, description="how often a retention pass runs")


class StorageConfig(StrictModel):
    """What Sightline keeps on disk and for how long (docs/storage.md)."""

    recordings: RecordingsConfig = RecordingsConfig()
    rotate: RotationConfig = RotationConfig()
    retention: RetentionConfig = RetentionConfig()


class RunConfig(StrictModel):
    model: ModelConfig = ModelConfig()
    batching: BatchingConfig = BatchingConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    output_dir: Path = Path("runs/live")
    media_root: Path = Field(Path("."), description="file sources must lie under this directory")
    log_predictions: bool | Literal["all", "changes", "off"] = Field(
        True, description="the prediction log (output_dir/<stream>.jsonl, or rotated files under "
                          "output_dir/predictions/ for a stream that runs until stopped): all (true) a line per "
                          "classified frame, changes a line when the shown label changes, off (false) none")
    storage: StorageConfig = StorageConfig()  # segments, rotation, retention: docs/storage.md
    server: ServerConfig = ServerConfig()
    annotated_video: AnnotatedVideoConfig = AnnotatedVideoConfig()
    events: EventsConfig = EventsConfig()  # rules, clips, events.jsonl: docs/events.md
    streams: list[StreamConfig] = Field(default_factory=list)
    cluster: ClusterConfig = ClusterConfig()

    @property
    def prediction_level(self) -> Literal["all", "changes", "off"]:
        """``log_predictions`` as a level: true is all, false is off."""
        level = self.log_predictions
        return "all" if level is True else "off" if level is False else level

    @model_validator(mode="after")
    def _stream_cap(self) -> RunConfig:
        if len(self.streams) > self.server.max_streams:
            raise ValueError(f"streams: {len(self.streams)} streams configured, more than server.max_streams "
                             f"({self.server.max_streams})")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> RunConfig:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.streams):
            if s.name in seen:
                raise ValueError(f"streams[{i}].name: duplicate stream name {s.name!r} (also streams[{seen[s.name]}])")
            seen[s.name] = i
        return self


def url_scheme(url: str) -> str:
    """The scheme in lower case, "" for a path (a Windows drive letter is not a scheme)."""
    match = SchemeRe.match(url)
    return match.group(1).lower() if match else ""


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """The validated config; schema errors and disk errors (missing files, media root) reported together."""
    try:
        config = load_yaml(path, RunConfig)
    except ConfigError as exc:
        disk = _disk_problems_of_valid_streams(read_yaml(path), str(path))
        raise ConfigError("\n".join([str(exc), *disk])) from None
    check_sources(config.streams, config.media_root, origin=str(path))
    return config


def _disk_problems_of_valid_streams(data: object, origin: str) -> list[str]:
    """When the file has schema errors, still check the streams that are valid on their own."""
    if not isinstance(data, dict) or not isinstance(data.get("streams"), list):
        return []
    root = data.get("media_root", ".")
    if not isinstance(root, str | os.PathLike):
        return []
    problems = []
    for i, raw in enumerate(data["streams"]):
        try:
            stream = StreamConfig.model_validate(raw)
        except ValueError:  # pydantic's ValidationError: already reported with the schema errors
            continue
        problem = check_source(stream, Path(root))
        if problem:
            problems.append(f"{origin}: streams[{i}].url: {problem}")
    return problems


def parse_stream(data: object, origin: str = "stream") -> StreamConfig:
    return validate(data, StreamConfig, origin)


def check_sources(streams: list[StreamConfig], media_root: Path, origin: str, first_index: int = 0) -> None:
    """Errors that need the disk: missing files, files outside the media root, files without video."""
    problems = []
    for i, stream in enumerate(streams, start=first_index):
        problem = check_source(stream, media_root)
        if problem:
            problems.append(f"{origin}: streams[{i}].url: {problem}")
    if problems:
        raise ConfigError("\n".join(problems))


def outside_media_root(stream: StreamConfig, media_root: Path) -> str | None:
    """Why a file source is refused whatever the file is (API: 403), or None."""
    if not stream.is_file:
        return None
    path, root = stream.file_path(), media_root.resolve()
    try:
        inside = path.resolve().is_relative_to(root)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        return f"{bounded(path)} cannot be resolved ({getattr(exc, 'strerror', None) or exc})"
    if inside:
        return None
    relative = [str(p) for p in (path, media_root) if not p.is_absolute()]
    where = f" ({' and '.join(map(bounded, relative))}: {RELATIVE_PATHS})" if relative else ""
    return f"{bounded(path)} is outside the media root {bounded(root)}{where}"


RELATIVE_PATHS = "relative paths are resolved against the working directory, not the config file's folder"


def check_source(stream: StreamConfig, media_root: Path) -> str | None:
    if not stream.is_file:
        return None
    outside = outside_media_root(stream, media_root)
    if outside:
        return outside
    path = stream.file_path()
    try:
        resolved = path.resolve()
        if not resolved.is_file():
            where = "" if path.is_absolute() else f" (looked for {bounded(resolved)}: {RELATIVE_PATHS})"
            return f"{bounded(path)}: no such file{where}"
    except OSError as exc:  # a name too long for the file system, a permission problem on the way
        return f"{bounded(path)}: cannot be read ({exc.strerror or type(exc).__name__})"
    return probe_video(resolved)


def probe_video(path: Path) -> str | None:
    import av  # imported here so config validation stays importable without PyAV's start-up cost

    try:
        with av.open(str(path), timeout=5.0) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                return f"{bounded(path.name)} has no video stream (found: {', '.join(kinds)})"
    except av.FFmpegError as exc:
        return f"{bounded(path.name)} is not a readable video ({exc.strerror or type(exc).__name__})"
    return None
