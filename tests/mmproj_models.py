"""Tiny multimodal projectors (mmproj GGUFs) for the tests' text models, written with ``gguf``.

llama.cpp's mtmd loads a projector only if its output width equals the text model's embedding
width (640 for the embedded Gemma 3 270M); everything else may be tiny. Random weights: they
prove plumbing, positions and caching, never what a picture shows. For the embedded Gemma 3 270M:

- ``tiny_vision_mmproj()``: projector type ``gemma3`` (Gemma 3's own: a SigLIP ViT, a 2D average
  pool, an RMS norm and one projection). The smallest tensor set of the vision projectors, and the
  one the embedded model's family uses, so mtmd wraps images in ``<start_of_image>`` /
  ``<end_of_image>`` and decodes them with non-causal attention as it does for Gemma 3 4B.
  56 px images, 14 px patches -> 4x4 patches, pooled by 2 -> 4 image tokens.
- ``tiny_audio_mmproj()``: projector type ``ultravox`` (a Whisper encoder: two 1D convolutions, a
  transformer, frame stacking, an RMS-normed SwiGLU projector). Whisper works on 30 s windows of
  128 mel bins; 1,500 positions after the stride-2 convolution, stacked by 20 -> 75 tokens a window.

For M-RoPE (a Qwen2-VL text model, ``tiny_models.tiny_qwen2vl()``, 64 wide):

- ``tiny_qwen2vl_mmproj()``: projector type ``qwen2vl_merger`` (Qwen2-VL's ViT with 2-D M-RoPE
  and its 2x2 patch merger). Images are resized to a grid of 28 px cells, at least 8: a 300 x 100
  picture makes 11 x 4 embeddings that advance the text's position by 11.
- ``tiny_qwen25vl_mmproj()``: the same as Qwen2.5-VL's ``qwen2.5vl_merger`` (windowed attention in
  its first block, SwiGLU MLPs).
- ``tiny_qwen2_audio_mmproj()``: projector type ``qwen2a`` (Qwen2-Audio / Qwen2.5-Omni's audio: a
  Whisper encoder, a 2x pool, one linear layer): 750 embeddings per 30 s window, one position each.

All are written once into the test cache (``tiny_models.cache_dir``).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable

import gguf
import numpy as np
from tiny_models import cache_dir

TEXT_EMBD = 640  # the embedded Gemma 3 270M's n_embd: the projector's output width
QWEN_TEXT_EMBD = 64  # tiny_models.tiny_qwen2vl()'s n_embd
VIT_EMBD = 32
VIT_HEADS = 2
VIT_FF = 64
IMAGE_SIZE = 56
PATCH_SIZE = 14
POOL = 2  # Gemma 3's avg-pool kernel (4 in the real model); tokens per image = (56/14/2)^2 = 4
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE // POOL) ** 2
MEL_BINS = 128
AUDIO_POSITIONS = 1500  # Whisper: 3,000 mel frames a 30 s window, halved by the second conv
STACK = 20  # must divide 1,500 (mtmd checks the token count it predicted)
AUDIO_TOKENS = AUDIO_POSITIONS // STACK  # per 30 s window


def _write_cached(name: str, write: Callable[[str], None]) -> str:
    """``cache_dir()/name``, written by ``write(tmp_path)`` the first time (atomic rename)."""
    target = cache_dir() / name
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return str(target)


def _common_keys(writer: gguf.GGUFWriter, modality: str, n_embd: int, n_layer: int, out_embd: int = TEXT_EMBD) -> None:
    writer.add_uint32(f"clip.{modality}.embedding_length", n_embd)
    writer.add_uint32(f"clip.{modality}.feed_forward_length", VIT_FF)
    writer.add_uint32(f"clip.{modality}.block_count", n_layer)
    writer.add_uint32(f"clip.{modality}.projection_dim", out_embd)
    writer.add_uint32(f"clip.{modality}.attention.head_count", VIT_HEADS)
    writer.add_float32(f"clip.{modality}.attention.layer_norm_epsilon", 1e-6)


def _encoder_layers(writer: gguf.GGUFWriter, prefix: str, n_layer: int, rng: np.random.Generator,
                    k_bias: bool) -> None:
    """Pre-norm transformer blocks with llama.cpp's clip tensor names (``{prefix}.blk.N.*``)."""
    def matrix(n_out: int, n_in: int) -> np.ndarray:  # rows of n_in values
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    zeros, ones = np.zeros(VIT_EMBD, np.float32), np.ones(VIT_EMBD, np.float32)
    for i in range(n_layer):
        blk = f"{prefix}.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{blk}.{part}.weight", matrix(VIT_EMBD, VIT_EMBD))
            if part != "attn_k" or k_bias:  # Whisper's key projection has no bias
                writer.add_tensor(f"{blk}.{part}.bias", zeros)
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"{blk}.{norm}.weight", ones)
            writer.add_tensor(f"{blk}.{norm}.bias", zeros)
        writer.add_tensor(f"{blk}.ffn_up.weight", matrix(VIT_FF, VIT_EMBD))
        writer.add_tensor(f"{blk}.ffn_up.bias", np.zeros(VIT_FF, np.float32))
        writer.add_tensor(f"{blk}.ffn_down.weight", matrix(VIT_EMBD, VIT_FF))
        writer.add_tensor(f"{blk}.ffn_down.bias", zeros)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_vision_mmproj(path: str, n_layer: int = 1, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "clip")
    writer.add_name("tiny-gemma3-vision")
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_gelu", True)
    _common_keys(writer, "vision", VIT_EMBD, n_layer)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.projector.scale_factor", POOL)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # numpy shapes are ggml's ne reversed: the patch conv is ne [p, p, 3, n_embd]
    writer.add_tensor("v.patch_embd.weight", (rng.standard_normal(
        (VIT_EMBD, 3, PATCH_SIZE, PATCH_SIZE)) * 0.05).astype(np.float32))
    writer.add_tensor("v.patch_embd.bias", np.zeros(VIT_EMBD, np.float32))
    writer.add_tensor("v.position_embd.weight", (rng.standard_normal(
        (n_patches, VIT_EMBD)) * 0.02).astype(np.float32))
    _encoder_layers(writer, "v", n_layer, rng, k_bias=True)
    writer.add_tensor("v.post_ln.weight", np.ones(VIT_EMBD, np.float32))
    writer.add_tensor("v.post_ln.bias", np.zeros(VIT_EMBD, np.float32))
    writer.add_tensor("mm.soft_emb_norm.weight", np.ones(VIT_EMBD, np.float32))
    # ggml ne [TEXT_EMBD, VIT_EMBD]: mtmd reads the output width from ne[0]
    writer.add_tensor("mm.input_projection.weight", (rng.standard_normal(
        (VIT_EMBD, TEXT_EMBD)) * 0.02).astype(np.float32))
    _finish(writer)


def write_qwen2vl_mmproj(path: str, n_layer: int = 1, seed: int = 2, window_pattern: int = 0) -> None:
    """Qwen2-VL's vision tower: two patch convolutions (a video's two frames; a still image goes
    through both), pre-norm blocks with 2-D M-RoPE attention, and the merger (a norm, then 2x2
    patches concatenated into an MLP to the text width). ``window_pattern`` > 0: Qwen2.5-VL's
    (attention within 112 px windows except in every window_pattern-th block, SwiGLU MLPs)."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "clip")
    writer.add_name("tiny-qwen2.5vl-vision" if window_pattern else "tiny-qwen2vl-vision")
    writer.add_string("clip.projector_type", "qwen2.5vl_merger" if window_pattern else "qwen2vl_merger")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_silu" if window_pattern else "clip.use_gelu", True)
    if window_pattern:
        writer.add_uint32("clip.vision.n_wa_pattern", window_pattern)
        for i in range(n_layer):
            writer.add_tensor(f"v.blk.{i}.ffn_gate.weight", (rng.standard_normal((VIT_FF, VIT_EMBD))
                                                              / np.sqrt(VIT_EMBD)).astype(np.float32))
            writer.add_tensor(f"v.blk.{i}.ffn_gate.bias", np.zeros(VIT_FF, np.float32))
    _common_keys(writer, "vision", VIT_EMBD, n_layer, QWEN_TEXT_EMBD)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    for name in ("v.patch_embd.weight", "v.patch_embd.weight.1"):  # no bias: the graph asserts it
        writer.add_tensor(name, (rng.standard_normal((VIT_EMBD, 3, PATCH_SIZE, PATCH_SIZE)) * 0.05)
                          .astype(np.float32))
    _encoder_layers(writer, "v", n_layer, rng, k_bias=True)
    writer.add_tensor("v.post_ln.weight", np.ones(VIT_EMBD, np.float32))
    writer.add_tensor("v.post_ln.bias", np.zeros(VIT_EMBD, np.float32))
    merged = 4 * VIT_EMBD
    writer.add_tensor("mm.0.weight", (rng.standard_normal((merged, merged)) / np.sqrt(merged)).astype(np.float32))
    writer.add_tensor("mm.0.bias", np.zeros(merged, np.float32))
    # unit-variance embeddings, like the text model's token embeddings
    writer.add_tensor("mm.2.weight", rng.standard_normal((QWEN_TEXT_EMBD, merged)).astype(np.float32))
    writer.add_tensor("mm.2.bias", np.zeros(QWEN_TEXT_EMBD, np.float32))
    _finish(writer)


def _audio_writer(path: str, name: str, projector_type: str, n_layer: int, out_embd: int) -> gguf.GGUFWriter:
    writer = gguf.GGUFWriter(path, "clip")
    writer.add_name(name)
    writer.add_string("clip.projector_type", projector_type)
    writer.add_bool("clip.has_vision_encoder", False)
    writer.add_bool("clip.has_audio_encoder", True)
    _common_keys(writer, "audio", VIT_EMBD, n_layer, out_embd)
    writer.add_uint32("clip.audio.num_mel_bins", MEL_BINS)
    return writer


def _whisper_encoder(writer: gguf.GGUFWriter, n_layer: int, rng: np.random.Generator) -> None:
    """Whisper's encoder: two 1D convolutions, learned positions, blocks, a final norm."""
    # conv1d kernels are ne [k, in, out]
    writer.add_tensor("a.conv1d.1.weight", (rng.standard_normal((VIT_EMBD, MEL_BINS, 3)) * 0.05)
                      .astype(np.float16))
    writer.add_tensor("a.conv1d.1.bias", np.zeros((VIT_EMBD, 1), np.float32))
    writer.add_tensor("a.conv1d.2.weight", (rng.standard_normal((VIT_EMBD, VIT_EMBD, 3)) * 0.05)
                      .astype(np.float16))
    writer.add_tensor("a.conv1d.2.bias", np.zeros((VIT_EMBD, 1), np.float32))
    writer.add_tensor("a.position_embd.weight", (rng.standard_normal(
        (AUDIO_POSITIONS, VIT_EMBD)) * 0.02).astype(np.float32))
    _encoder_layers(writer, "a", n_layer, rng, k_bias=False)
    writer.add_tensor("a.post_ln.weight", np.ones(VIT_EMBD, np.float32))
    writer.add_tensor("a.post_ln.bias", np.zeros(VIT_EMBD, np.float32))


def write_audio_mmproj(path: str, n_layer: int = 1, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    writer = _audio_writer(path, "tiny-ultravox-audio", "ultravox", n_layer, TEXT_EMBD)
    writer.add_uint32("clip.audio.projector.stack_factor", STACK)
    _whisper_encoder(writer, n_layer, rng)
    stacked = VIT_EMBD * STACK
    writer.add_tensor("mm.a.norm_pre.weight", np.ones(stacked, np.float32))
    # SwiGLU: mlp.1 gives 2 x hidden, halves gated; mlp.2 maps hidden -> text width
    hidden = 64
    writer.add_tensor("mm.a.mlp.1.weight", (rng.standard_normal((2 * hidden, stacked))
                                            / np.sqrt(stacked)).astype(np.float32))
    writer.add_tensor("mm.a.norm_mid.weight", np.ones(hidden, np.float32))
    writer.add_tensor("mm.a.mlp.2.weight", (rng.standard_normal((TEXT_EMBD, hidden)) * 0.02)
                      .astype(np.float32))
    _finish(writer)


def write_qwen2_audio_mmproj(path: str, n_layer: int = 1, seed: int = 3) -> None:
    """Qwen2-Audio's encoder (Qwen2.5-Omni's audio half): Whisper, a 2x average pool (750
    embeddings per 30 s window) and one linear layer to the text width."""
    rng = np.random.default_rng(seed)
    writer = _audio_writer(path, "tiny-qwen2-audio", "qwen2a", n_layer, QWEN_TEXT_EMBD)
    _whisper_encoder(writer, n_layer, rng)
    writer.add_tensor("mm.a.fc.weight", rng.standard_normal((QWEN_TEXT_EMBD, VIT_EMBD)).astype(np.float32))
    writer.add_tensor("mm.a.fc.bias", np.zeros(QWEN_TEXT_EMBD, np.float32))
    _finish(writer)


@functools.cache
def tiny_vision_mmproj() -> str:
    return _write_cached("tiny-gemma3-vision-mmproj-v1.gguf", write_vision_mmproj)


@functools.cache
def tiny_qwen2_audio_mmproj() -> str:
    return _write_cached("tiny-qwen2-audio-mmproj-v1.gguf", write_qwen2_audio_mmproj)


@functools.cache
def tiny_qwen2vl_mmproj() -> str:
    return _write_cached("tiny-qwen2vl-vision-mmproj-v1.gguf", write_qwen2vl_mmproj)


@functools.cache
def tiny_qwen25vl_mmproj() -> str:
    return _write_cached("tiny-qwen2.5vl-vision-mmproj-v1.gguf",
                         functools.partial(write_qwen2vl_mmproj, n_layer=2, window_pattern=2))


@functools.cache
def tiny_audio_mmproj() -> str:
    return _write_cached("tiny-ultravox-audio-mmproj-v1.gguf", write_audio_mmproj)


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG of random RGB pixels (zlib and struct: no imaging library needed)."""
    import struct
    import zlib

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per row

    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + block(b"IHDR", header) + block(b"IDAT", zlib.compress(raw)) + block(b"IEND", b"")


def wav(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    """A mono 16-bit WAV of noise."""
    import io
    import wave

    samples = (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 3000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buf.getvalue()


def video(seconds: float, fps: int = 8, seed: int = 0, size: str = "64x48", source: str = "testsrc") -> bytes:
    """An MP4 (MPEG-4 part 2, index at the end) of an ffmpeg source (the moving test pattern, or
    ``color`` for a still picture), its hue turned by ``seed``, written with the ffmpeg the server
    decodes videos with (frontend.media.video)."""
    import subprocess

    from frontend.media.video import find_ffmpeg

    ffmpeg = find_ffmpeg("")
    assert ffmpeg is not None, "the video tests need ffmpeg (pip install imageio-ffmpeg)"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                        "-i", f"{source}=size={size}:rate={fps}:duration={seconds}", "-vf", f"hue=h={seed * 37 % 360}",
                        "-c:v", "mpeg4", "-pix_fmt", "yuv420p", path], check=True, timeout=60)
        with open(path, "rb") as f:
            return f.read()
