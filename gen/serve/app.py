"""The Gradio page and API of `sample.py serve` (optional extra: pip install -e ".[serve]").

One tab per run (a comparison tab first when several runs take an image); every tab's button is
also an API endpoint named after the run (docs/serve.md). Jobs run one at a time through Gradio's
queue, which shows each waiting page its position. No telemetry, no share link, no web fonts; it
binds to 127.0.0.1 unless --host says otherwise.
"""
from __future__ import annotations

import base64
import functools
import html
import os
import re
from pathlib import Path
from typing import Optional

from ..models.inference import INFERENCE_MODES
from ..pipelines.diffusion import SCHEDULERS
from ..pipelines.edm import EDM_SCHEDULERS
from .runs import Limits, Result, Scratch, ServedRun, compare

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry
try:
    import gradio as gr
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError('sample.py serve needs the optional package gradio: pip install -e ".[serve]"') from err

MAX_FILE_SIZE = "64mb"  # an upload larger than this is refused by the server before it is read


class Upload(gr.Image):
    """An image upload handed over as the file that was sent (its path), undecoded: sample.py's
    reader then decides, so 16-bit, palette and RGBA files are read as sample.py reads them and a
    file that is not an image gets gen's message instead of Gradio's."""

    def get_block_name(self) -> str:
        return "image"  # the page shows Gradio's own image upload

    def preprocess(self, payload) -> Optional[str]:
        if payload is None:
            return None
        if payload.path is None and payload.url and payload.url.startswith("data:"):
            return _data_url_file(payload.url, payload.orig_name, self.GRADIO_CACHE)
        if payload.path is None:
            raise gr.Error("send the image as a file (gradio_client.handle_file) or a data: URL; this "
                           "server fetches nothing from the network")
        return payload.path


class _Bounded:
    """An integer Slider / Number whose out-of-range or fractional value (sent through the API) is
    refused with its label, where Gradio would say only "Value 0 is less than minimum value 1" or
    round it."""

    def preprocess(self, payload):
        if isinstance(payload, float) and not payload.is_integer():
            raise gr.Error(f"{self.label} {payload:g}: expected a whole number", print_exception=False)
        low, high = self.minimum, self.maximum
        if isinstance(payload, (int, float)) and ((low is not None and payload < low)
                                                  or (high is not None and payload > high)):
            bounds = f"{low:g}..{high:g}" if high is not None else f"at least {low:g}"
            raise gr.Error(f"{self.label} {payload:g}: must be {'in ' if high is not None else ''}{bounds}",
                           print_exception=False)
        return super().preprocess(payload)


class Slider(_Bounded, gr.Slider):
    def get_block_name(self) -> str:
        return "slider"


class Number(_Bounded, gr.Number):
    def get_block_name(self) -> str:
        return "number"


def _data_url_file(url: str, name: Optional[str], cache: str) -> str:
    """A base64 data: URL written to a file under Gradio's cache -> its path."""
    body = url.split(",", 1)[1] if "," in url else ""
    folder = Path(cache) / "data-urls"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^\w.-]", "_", name or "upload") or "upload")
    path.write_bytes(base64.b64decode(body))
    return str(path)


def _guard(fn):
    """User errors -> gr.Error: a message in the page (and the API's error), the server keeps serving."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FloatingPointError) as err:
            raise gr.Error(str(err), print_exception=False) from None
    return wrapped


def _click(button, fn, inputs, outputs, api_name: str) -> None:
    """Every run's jobs share one queue of one worker: a CPU runs one model at a time, and each
    waiting page is shown its place in that queue."""
    button.click(fn, inputs, outputs, api_name=api_name, concurrency_id="gen", concurrency_limit=1)


def _notes(result: Result) -> str:
    for note in result.notes:
        gr.Warning(note) if "rounded" in note or "transparency" in note else gr.Info(note)
    return "\n".join(f"- {n}" for n in result.notes) or "input read as is"


def _progress_cb(progress):
    return lambda done, total: progress((done, total), desc="denoising", unit="steps")


def endpoint(name: str) -> str:
    """The API name of a run's tab: its name with anything but letters, digits and _ replaced."""
    return re.sub(r"\W", "_", name).strip("_") or "run"


def translator_tab(run: ServedRun, scratch: Scratch, limits: Limits) -> None:
    eid = endpoint(run.name)  # element ids: the page's tests find the input, output and button
    pipe = run.pipe
    with gr.Row():
        image = Upload(label="input (label map)" if pipe.label_input else "input", height=320,
                       elem_id=f"{eid}-input")
        output = gr.Image(label="output", type="filepath", format="png", interactive=False, height=320,
                          elem_id=f"{eid}-output")
    slider = gr.ImageSlider(label="before / after", type="filepath", format="png", interactive=False)
    with gr.Row():
        choices = run.directions or [pipe.direction]
        direction = gr.Radio(choices, value=choices[0], label="direction", visible=bool(run.directions))
        inference = gr.Radio(list(INFERENCE_MODES), value=pipe.inference, label="inference",
                             info="paper: dropout noise + per-image statistics; eval: deterministic")
        sixteen = gr.Checkbox(False, label="16-bit PNG", visible=pipe.net.config.out_channels == 1)
    go = gr.Button("Translate", variant="primary", elem_id=f"{eid}-run")
    notes = gr.Markdown()

    @_guard
    def translate(upload, direction, inference, sixteen_bit):
        result = run.translate(upload, scratch.new(), limits, direction, inference, 16 if sixteen_bit else 8)
        out = str(result.files[0][1])
        return out, (str(result.before), out), _notes(result)

    _click(go, translate, [image, direction, inference, sixteen], [output, slider, notes], endpoint(run.name))


def colorization_tab(run: ServedRun, scratch: Scratch, limits: Limits) -> None:
    eid = endpoint(run.name)  # element ids: the page's tests find the input, output and button
    with gr.Row():
        image = Upload(label="input (any image: its lightness is used)", height=320, elem_id=f"{eid}-input")
        gray = gr.Image(label="grayscale baseline", type="filepath", format="png", interactive=False,
                        height=320)
        output = gr.Image(label="colorized", type="filepath", format="png", interactive=False, height=320,
                          elem_id=f"{eid}-output")
    slider = gr.ImageSlider(label="gray / colour", type="filepath", format="png", interactive=False)
    go = gr.Button("Colorize", variant="primary", elem_id=f"{eid}-run")
    notes = gr.Markdown()

    @_guard
    def colorize(upload):
        result = run.colorize(upload, scratch.new(), limits)
        out, base = str(result.files[0][1]), str(result.files[1][1])
        return out, base, (base, out), _notes(result)

    _click(go, colorize, [image], [output, gray, slider, notes], endpoint(run.name))


def legend_html(rows: list[dict]) -> str:
    """The classes present as a small table: colour swatch, class, label id, share of pixels."""
    cells = "".join(
        f"<tr><td><span style='display:inline-block;width:1em;height:1em;background:{r['colour']}'></span>"
        f"</td><td>class {r['class']}</td><td>id {r['label_id']}</td><td>{100 * r['share']:.1f}%</td></tr>"
        for r in rows)
    head = "<tr><th></th><th>class</th><th>label id</th><th>pixels</th></tr>"
    return f"<table class='gen-legend'>{head}{cells}</table>"


def segmentation_tab(run: ServedRun, scratch: Scratch, limits: Limits) -> None:
    eid = endpoint(run.name)  # element ids: the page's tests find the input, output and button
    with gr.Row():
        image = Upload(label="photo", height=320, elem_id=f"{eid}-input")
        labels = gr.Image(label="label map", type="filepath", format="png", interactive=False, height=320,
                          elem_id=f"{eid}-output")
        overlay = gr.Image(label="overlay", type="filepath", format="png", interactive=False, height=320)
    go = gr.Button("Segment", variant="primary", elem_id=f"{eid}-run")
    legend = gr.HTML(label="classes present")
    notes = gr.Markdown()

    @_guard
    def segment(upload):
        result = run.segment(upload, scratch.new(), limits)
        return str(result.files[0][1]), str(result.files[1][1]), legend_html(result.legend), _notes(result)

    _click(go, segment, [image], [labels, overlay, legend, notes], endpoint(run.name))


def sampling_controls(run: ServedRun, limits: Limits, count_label: str, count: int):
    with gr.Row():
        seed = Number(0, label="seed", precision=0, minimum=0)
        steps = Slider(1, run.train_timesteps, value=min(50, run.train_timesteps), step=1, label="steps")
        scheduler = gr.Dropdown(list(run.pipe.schedulers), value=run.pipe.default_scheduler,
                                label="scheduler")
        num = Slider(1, limits.max_samples, value=count, step=1, label=count_label)
    return seed, steps, scheduler, num


def ddpm_tab(run: ServedRun, scratch: Scratch, limits: Limits) -> None:
    seed, steps, scheduler, num = sampling_controls(run, limits, "number of samples",
                                                    min(4, limits.max_samples))
    go = gr.Button("Sample", variant="primary")
    gallery = gr.Gallery(label="samples", format="png", columns=4, type="filepath")
    notes = gr.Markdown()

    @_guard
    def sample(num, steps, scheduler, seed, progress=gr.Progress()):
        result = run.sample(scratch.new(), limits, num, steps, scheduler, seed, _progress_cb(progress))
        return [(str(p), c) for c, p in result.files], _notes(result)

    _click(go, sample, [num, steps, scheduler, seed], [gallery, notes], endpoint(run.name))


def conditional_ddpm_tab(run: ServedRun, scratch: Scratch, limits: Limits) -> None:
    label = run.pipe.label_input
    with gr.Row():
        image = Upload(label="condition (label map)" if label else "condition image", height=320)
        gallery = gr.Gallery(label="samples", format="png", columns=4, type="filepath", height=320)
    seed, steps, scheduler, k = sampling_controls(run, limits, "samples per input", 1)
    full = gr.Checkbox(False, label="full size (sample at the input's own size)")
    go = gr.Button("Sample", variant="primary")
    notes = gr.Markdown()

    @_guard
    def sample(upload, k, steps, scheduler, seed, full_size, progress=gr.Progress()):
        result = run.sample_for(upload, scratch.new(), limits, k, steps, scheduler, seed, full_size,
                                _progress_cb(progress))
        return [(str(p), c) for c, p in result.files], _notes(result)

    _click(go, sample, [image, k, steps, scheduler, seed, full], [gallery, notes], endpoint(run.name))


def compare_tab(runs: list[ServedRun], scratch: Scratch, limits: Limits) -> None:
    with gr.Row():
        image = Upload(label="input", height=320)
        gallery = gr.Gallery(label="outputs, one per run", format="png", columns=4, type="filepath",
                             height=320)
    with gr.Row(visible=any(r.kind == "conditional ddpm" for r in runs)):
        seed = Number(0, label="DDPM seed", precision=0, minimum=0)
        most = max([r.train_timesteps for r in runs if r.kind == "conditional ddpm"] or [1000])
        steps = Slider(1, most, value=min(50, most), step=1, label="DDPM steps")
        # "default": each run's own sampler (DDIM, EDM's Heun, or what its training grids used)
        scheduler = gr.Dropdown(["default", *SCHEDULERS, *EDM_SCHEDULERS[:2]], value="default",
                                label="DDPM scheduler")
    go = gr.Button("Compare", variant="primary")
    notes = gr.Markdown()

    @_guard
    def run_all(upload, steps, scheduler, seed):
        result = compare(runs, upload, scratch, limits, steps, scheduler, seed)
        return [(str(p), c) for c, p in result.files], _notes(result)

    _click(go, run_all, [image, steps, scheduler, seed], [gallery, notes], "compare")


TABS = {"translation": translator_tab, "colorization": colorization_tab, "segmentation": segmentation_tab,
        "ddpm": ddpm_tab, "conditional ddpm": conditional_ddpm_tab}


def build_app(runs: list[ServedRun], limits: Limits = Limits(),
              scratch: Optional[Scratch] = None) -> "gr.Blocks":
    """The page: a comparison tab when two or more runs take an image, then one tab per run."""
    scratch = scratch or Scratch()
    names = [endpoint(r.name) for r in runs]
    clash = sorted({n for n in names if names.count(n) > 1 or n == "compare"})
    if clash:
        raise ValueError(f"runs named {clash} would share an API name; serve folders with distinct names")
    with gr.Blocks(title="gen: " + ", ".join(r.name for r in runs), analytics_enabled=False) as demo:
        gr.Markdown("## gen\n" + "\n".join(f"- {html.escape(r.describe())}" for r in runs))
        with gr.Tabs():
            if sum(r.takes_image for r in runs) > 1:
                with gr.Tab("compare"):
                    compare_tab(runs, scratch, limits)
            for run in runs:
                with gr.Tab(run.name):
                    TABS[run.kind](run, scratch, limits)
    demo.queue(default_concurrency_limit=1)  # one job at a time; waiting pages see their position
    return demo


# System fonts only: the default theme links web fonts, which a closed network cannot fetch.
THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(demo: "gr.Blocks", host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve on host:port, never through a share link; -> (app, local url)."""
    app, url, _ = demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                              prevent_thread_lock=not block, ssr_mode=False, mcp_server=False,
                              enable_monitoring=False, max_file_size=MAX_FILE_SIZE, show_error=True,
                              theme=gr.themes.Default(**THEME_FONTS), footer_links=["api"], quiet=True)
    return app, url
