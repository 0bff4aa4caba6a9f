"""The studio page: the guided path and seven views over one model (be the model, one step, through the layers,
geometry, steer, how it learned, generate), and a Train tab when there is a train folder; wired to
`handlers.Studio` and the tabs' own handlers. Every event has an `api_name`, so the page is also an API
(`gradio_client.Client(url).predict(..., api_name="/distribution")`).

Above the tabs, the training timeline (when the model folder has one): a slider over the recorded steps and a play
button move every view to the model as it was at that step. Every event takes the slider's step as its last input.
"""

import itertools
import math
import time
from pathlib import Path

import gradio as gr
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..explain.microscope import DEFAULT_HELDOUT
from .context_view import STUDY_NAMES, context_view
from .guide import build_guide, load_guide, wire_guide
from .handlers import ALONG_TEXT, PROMPTS, Studio
from .live_training import SIZES, recipe_mix
from .microscope_tab import SETTINGS, MicroscopeTab, default_batch
from .steer_tab import DEFAULT_PROMPT, DIRECTION_KINDS, POSITIONS, SteerTab
from .train_tab import FAMILY_CONTROLS, STATES, TrainTab

TITLE = "TinyLLM studio"
PLAY_SECONDS = 0.6  # the pause between the timeline's frames when playing


def build_app(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: str | Path | None = None,
    train_dir: str | Path | None = None,
) -> gr.Blocks:
    """The page for `model` and `tokenizer`; "How it learned" reads the training records in `run_dir`. With
    `train_dir`, a "Train" tab trains new models there (one run at a time) and opens each finished one in every tab."""
    studio = Studio(model, tokenizer, run_dir)
    num_layers = model.config.num_hidden_layers
    num_heads = model.config.num_attention_heads
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\n`{getattr(model, 'name_or_path', '') or type(model).__name__}`: look inside the "
                    "model, and at how it learned.")  # fmt: skip
        steps = studio.steps
        with gr.Row(visible=bool(steps), elem_id="timeline") as timeline_row:
            step = gr.Slider(*_slider_range(steps), label="training step: the model as it was then", scale=6,
                             elem_id="timeline-step")  # fmt: skip
            play_button = gr.Button("Play", scale=1, elem_id="timeline-play")
            pause_button = gr.Button("Pause", scale=1, elem_id="timeline-pause")
        timeline_status = gr.Markdown(studio.timeline_status(steps[-1] if steps else None),
                                      elem_id="timeline-status")  # fmt: skip
        views = {"guide", "be", "step", "geometry", "steer", "layers", "learning", "generate"}
        views |= {"train"} if train_dir is not None else set()
        with gr.Tabs(selected="guide") as tabs:
            with gr.Tab("Guide", id="guide"):
                guide_buttons = build_guide(load_guide(), views)
            with gr.Tab("Be the model", id="be"):
                score = gr.State({"rounds": 0, "top": 0, "probability": 0.0})
                prompt = gr.Textbox(label="Prompt", value=PROMPTS[0], elem_id="be-prompt")
                status = gr.Markdown(elem_id="be-status")
                candidates = gr.Radio(label="Your guess: which word comes next?", choices=[], elem_id="be-candidates")
                with gr.Row():
                    typed = gr.Textbox(label="...or type a word", scale=3, elem_id="be-typed")
                    guess_typed = gr.Button("Guess this word", scale=1, elem_id="be-guess-typed")
                verdict = gr.Markdown(elem_id="be-verdict")
                with gr.Row():
                    next_button = gr.Button("Next: append the model's word", elem_id="be-next")
                    new_button = gr.Button("New TinyWorld prompt", elem_id="be-new")
                with gr.Row():
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature",
                                            elem_id="be-temperature")  # fmt: skip
                    top_k = gr.Slider(0, 50, value=0, step=1, label="top-k (0: off)", elem_id="be-top-k")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1: off)", elem_id="be-top-p")
                chart = gr.Plot(label="The model's next-token distribution (after your guess)", elem_id="be-chart")
                distribution_status = gr.Markdown(elem_id="be-distribution-status")
                truth_table = gr.Dataframe(headers=["next word", "truth", "model"], label="The truth beside the model: "
                                           "TinyWorld's exact next word", elem_id="be-truth")  # fmt: skip
                truth_status = gr.Markdown(elem_id="be-truth-status")
                with gr.Accordion("numbers", open=False):
                    guess_numbers = gr.JSON(label="guess")
                    distribution_numbers = gr.JSON(label="distribution")

                sampling = [prompt, temperature, top_k, top_p, step]
                with gr.Accordion("numbers", open=False):
                    truth_numbers = gr.JSON(label="truth")
                truth_outputs = [truth_table, truth_status, truth_numbers]
                gr.Markdown("### Loss as surprise, word by word\nThe model's surprise at each word of a TinyWorld "
                            "text beside the truth's: the red marks are the true entropy, the floor no model can go "
                            "below on average. What lies above them is what the model has left to learn.")  # fmt: skip
                with gr.Row():
                    along_text = gr.Textbox(label="A TinyWorld text", value=ALONG_TEXT, scale=4,
                                            elem_id="be-along-text")  # fmt: skip
                    along_button = gr.Button("Score it word by word", scale=1, elem_id="be-along-run")
                along_plot = gr.Plot(label="surprise against the truth", elem_id="be-along")
                along_status = gr.Markdown(elem_id="be-along-status")
                with gr.Accordion("numbers", open=False):
                    along_numbers = gr.JSON(label="word by word")
                along_outputs = [along_plot, along_status, along_numbers]
                along_button.click(studio.truth_along, [along_text, step], along_outputs, api_name="truth_along")
                along_text.submit(studio.truth_along, [along_text, step], along_outputs, api_name=False)

                def reveal_all(text: str, t: float, k: int, p: float, at: float | None = None):
                    return (*studio.distribution(text, t, k, p, at), *studio.truth(text, at))

                reveal = [chart, distribution_status, distribution_numbers, *truth_outputs]

                def round_for(text: str, at: float | None = None):
                    words, message, text = studio.new_round(text, at)
                    return gr.update(choices=words, value=None), message, text, "", None

                round_outputs = [candidates, status, prompt, verdict, chart]
                app.load(round_for, [prompt, step], round_outputs, api_name="new_round")
                new_button.click(lambda at: round_for("", at), step, round_outputs, api_name=False)
                prompt.submit(round_for, [prompt, step], round_outputs, api_name=False)
                for source, word in ((candidates.input, candidates), (guess_typed.click, typed)):
                    source(studio.guess, [prompt, word, score, step], [verdict, score, guess_numbers],
                           api_name=False).then(reveal_all, sampling, reveal, api_name=False)  # fmt: skip
                gr.Button("guess", visible=False).click(studio.guess, [prompt, typed, score, step],
                                                        [verdict, score, guess_numbers], api_name="guess")  # fmt: skip
                for slider in (temperature, top_k, top_p):
                    slider.release(reveal_all, sampling, reveal, api_name=False)
                gr.Button("distribution", visible=False).click(studio.distribution, sampling, reveal[:3],
                                                               api_name="distribution")  # fmt: skip
                gr.Button("truth", visible=False).click(studio.truth, [prompt, step], truth_outputs, api_name="truth")
                next_button.click(studio.next_word, [prompt, step], prompt, api_name="next_word").then(
                    round_for, [prompt, step], round_outputs, api_name=False
                )

            with gr.Tab("One step", id="step"):
                microscope = MicroscopeTab(studio)
                gr.Markdown("Compute the loss of a batch, blame every weight, update: ONE AdamW step, taken on a "
                            "copy of the model (at the timeline's step), and everything it changed.")  # fmt: skip
                with gr.Row():
                    step_batch = gr.Textbox(label="The batch: one text per line", value=default_batch(), lines=4,
                                            scale=3, elem_id="step-batch")  # fmt: skip
                    step_heldout = gr.Textbox(label="A held-out text", value=DEFAULT_HELDOUT, scale=2,
                                              elem_id="step-heldout")  # fmt: skip
                with gr.Row():
                    step_adamw = gr.Radio(list(SETTINGS), value="run", elem_id="step-settings",
                                          label="AdamW settings (run: the training run's peak learning rate, weight "
                                                "decay, betas)")  # fmt: skip
                    step_lr = gr.Number(value=0, label="learning rate (0: the settings' own)", elem_id="step-lr")
                    step_button = gr.Button("Take one step", variant="primary", elem_id="step-run")
                step_status = gr.Markdown(elem_id="step-status")
                with gr.Row():
                    step_losses = gr.Plot(label="loss before and after", elem_id="step-losses")
                    step_next = gr.Plot(label="held out: next token", elem_id="step-heldout-plot")
                step_arrows = gr.Plot(label="the embedding rows that moved, on the word map", elem_id="step-arrows")
                with gr.Row():
                    step_blame = gr.Plot(label="blame and update per stage", elem_id="step-blame")
                    step_rows = gr.Dataframe(headers=["token", "moved (L2)", "in the batch"],
                                             label="the rows that moved farthest", elem_id="step-rows")  # fmt: skip
                with gr.Accordion("numbers", open=False):
                    step_numbers = gr.JSON()
                step_inputs = [step_batch, step_heldout, step_adamw, step_lr, step]
                step_outputs = [step_losses, step_next, step_arrows, step_blame, step_rows, step_status, step_numbers]
                step_button.click(microscope.run, step_inputs, step_outputs, api_name="microscope")

            with gr.Tab("Through the layers", id="layers"):
                lens_prompt = gr.Textbox(label="Prompt", value=PROMPTS[0], elem_id="layers-prompt")
                with gr.Row():
                    position = gr.Number(label="position (-1: the last)", value=-1, precision=0)
                    layer = gr.Slider(1, num_layers, value=1, step=1, label="attention: layer")
                    head = gr.Slider(1, num_heads, value=1, step=1, label="attention: head")
                lens_button = gr.Button("Look through the layers", elem_id="layers-run")
                lens_status = gr.Markdown(elem_id="layers-status")
                lens_image = gr.Plot(label="Logit lens: the top next token after each layer", elem_id="layers-lens")
                lens_table = gr.Dataframe(headers=["after", "KL to final (bits)", "top tokens"],
                                          label="At the position")  # fmt: skip
                attention_plot = gr.Plot(label="Attention", elem_id="layers-attention")
                with gr.Accordion("numbers", open=False):
                    lens_numbers = gr.JSON()
                lens_inputs = [lens_prompt, position, layer, head, step]
                lens_outputs = [lens_image, lens_table, attention_plot, lens_status, lens_numbers]
                lens_button.click(studio.layers, lens_inputs, lens_outputs, api_name="layers")
                for control in (layer, head):
                    control.release(studio.layers, lens_inputs, lens_outputs, api_name=False)
                gr.Markdown("### Context moves the vector\nThe same token enters every text as the same embedding; "
                            "each layer moves it by its context. Can a layer's hidden state tell the contexts "
                            "apart? (Held-out accuracy of the nearer context mean; chance is 50%, and its 95th "
                            "percentile under shuffled contexts is shown.)")  # fmt: skip
                with gr.Row():
                    context_study = gr.Radio(list(STUDY_NAMES), value=STUDY_NAMES[0], label="study",
                                             elem_id="context-study")  # fmt: skip
                    context_button = gr.Button("Compare the contexts", elem_id="context-run")
                context_status = gr.Markdown(elem_id="context-status")
                context_plot = gr.Plot(label="one panel per layer", elem_id="context-plot")
                context_table = gr.Dataframe(headers=["layer", "held-out accuracy", "chance (95%)",
                                                      "cosine distance of the means", "between / within"],
                                             label="separation per layer", elem_id="context-table")  # fmt: skip
                with gr.Accordion("numbers", open=False):
                    context_numbers = gr.JSON()
                context_outputs = [context_plot, context_table, context_status, context_numbers]
                context_inputs = [context_study, step]

                def compare_contexts(study: str, at: float | None = None):
                    return context_view(studio, study, at)

                context_button.click(compare_contexts, context_inputs, context_outputs, api_name="context")

            with gr.Tab("Geometry", id="geometry"):
                geometry_status = gr.Markdown(elem_id="geometry-status")
                word_plot = gr.Plot(label="Word map", elem_id="geometry-map")
                with gr.Row():
                    a, b, c = (gr.Textbox(label=n, value=v)
                               for n, v in (("a", "king"), ("- b", "man"), ("+ c", "woman")))  # fmt: skip
                    analogy_button = gr.Button("a - b + c ->", elem_id="geometry-analogy")
                analogy_table = gr.Dataframe(headers=["rank", "word", "cosine"], label="Analogy: top 5",
                                             elem_id="geometry-analogy-table")  # fmt: skip
                with gr.Row():
                    clicked = gr.Dropdown(label="A word of the map (or type one)", choices=[], allow_custom_value=True)
                    neighbours_button = gr.Button("Nearest neighbours", elem_id="geometry-neighbours")
                neighbours_table = gr.Dataframe(headers=["word", "cosine"], label="Nearest neighbours")
                with gr.Accordion("numbers", open=False):
                    geometry_numbers = gr.JSON()

                def show_map(at: float | None = None, chosen: str | None = None):
                    figure, words, message, numbers = studio.geometry_map(at)
                    keep = chosen if chosen in words else (words[0] if words else None)
                    return figure, gr.update(choices=words, value=keep), message, numbers

                map_outputs = [word_plot, clicked, geometry_status, geometry_numbers]
                app.load(show_map, step, map_outputs, api_name="word_map")
                analogy_outputs = [analogy_table, geometry_status, geometry_numbers]
                analogy_button.click(studio.analogy, [a, b, c, step], analogy_outputs, api_name="analogy")
                neighbours_outputs = [neighbours_table, geometry_status, geometry_numbers]
                neighbours_button.click(studio.neighbours, [clicked, step], neighbours_outputs, api_name="neighbours")
                clicked.select(studio.neighbours, [clicked, step], neighbours_outputs, api_name=False)

            with gr.Tab("Steer", id="steer"):
                steerer = SteerTab(studio)
                gr.Markdown("Add alpha times a direction to the hidden state (the residual stream) after layer L, "
                            "at every position, and watch the next word. Does the geometry's king -> queen arrow "
                            "turn 'he' into 'she'? Or the difference between the mean hidden states of female and "
                            "male stories (activation addition)? Any nudge raises a tiny probability, so the honest "
                            "measure is below: how often 'she' overtakes 'he', against random directions.")  # fmt: skip
                with gr.Row():
                    steer_prompt_box = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, scale=2,
                                                  elem_id="steer-prompt")  # fmt: skip
                    steer_kind = gr.Radio(list(DIRECTION_KINDS), value=DIRECTION_KINDS[2], label="direction",
                                          scale=3, elem_id="steer-kind")  # fmt: skip
                with gr.Row():
                    steer_layer = gr.Slider(0, num_layers, value=min(3, num_layers), step=1, elem_id="steer-layer",
                                            label="layer L (steered after L decoder layers)")  # fmt: skip
                    steer_alpha = gr.Slider(-4, 4, value=1, step=0.25, label="alpha", elem_id="steer-alpha")
                    steer_positions = gr.Radio(list(POSITIONS), value=POSITIONS[0], label="positions",
                                               elem_id="steer-positions")  # fmt: skip
                    steer_button = gr.Button("Steer", variant="primary", elem_id="steer-run")
                steer_status = gr.Markdown(elem_id="steer-status")
                steer_plot = gr.Plot(label="before and after", elem_id="steer-plot")
                gr.Markdown("### Does it really steer? The flip rate on held-out prompts")
                flip_button = gr.Button("Measure the flip rates at every layer (alpha and positions above)",
                                        elem_id="steer-flips-run")  # fmt: skip
                flip_status = gr.Markdown(elem_id="steer-flips-status")
                flip_plot = gr.Plot(label="flip rate per layer", elem_id="steer-flips")
                flip_table = gr.Dataframe(headers=["layer", "norm", *DIRECTION_KINDS], label="flips / trials",
                                          elem_id="steer-flips-table")  # fmt: skip
                with gr.Accordion("numbers", open=False):
                    steer_numbers = gr.JSON(label="one prompt")
                    flip_numbers = gr.JSON(label="flip rates")
                steer_inputs = [steer_prompt_box, steer_kind, steer_layer, steer_alpha, steer_positions, step]
                steer_outputs = [steer_plot, steer_status, steer_numbers]
                steer_button.click(steerer.steer, steer_inputs, steer_outputs, api_name="steer")
                for control in (steer_layer, steer_alpha):
                    control.release(steerer.steer, steer_inputs, steer_outputs, api_name=False)
                steer_kind.input(steerer.steer, steer_inputs, steer_outputs, api_name=False)
                flip_inputs = [steer_alpha, steer_positions, step]
                flip_outputs = [flip_plot, flip_table, flip_status, flip_numbers]
                flip_button.click(steerer.flip_rates, flip_inputs, flip_outputs, api_name="flip_rates")

            with gr.Tab("How it learned", id="learning"):
                learning_status = gr.Markdown(elem_id="learning-status")
                with gr.Row():
                    loss_plot, memory_plot = gr.Plot(label="loss"), gr.Plot(label="memorisation vs generalisation")
                with gr.Row():
                    geometry_plot, updates_plot = gr.Plot(label="geometry"), gr.Plot(label="blame")
                learning_outputs = [loss_plot, memory_plot, geometry_plot, updates_plot, learning_status]
                app.load(studio.learning, step, learning_outputs, api_name="learning")

            with gr.Tab("Generate", id="generate"):
                generate_prompt = gr.Textbox(label="Prompt", value="the queen", elem_id="generate-prompt")
                with gr.Row():
                    max_new_tokens = gr.Slider(1, 128, value=40, step=1, label="max new tokens")
                    sample = gr.Checkbox(label="sample (off: greedy)", value=True)
                    gen_temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="temperature")
                    gen_top_k = gr.Slider(0, 50, value=0, step=1, label="top-k (0: off)")
                    gen_top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
                generate_button = gr.Button("Generate", elem_id="generate-run")
                generated = gr.Textbox(label="Text", lines=4, elem_id="generate-output")
                generate_button.click(studio.generate, [generate_prompt, max_new_tokens, gen_temperature, gen_top_k,
                                                        gen_top_p, sample, step], generated,
                                       api_name="generate")  # fmt: skip

            if train_dir is not None:
                trainer = TrainTab(train_dir)
                with gr.Tab("Train", id="train"):
                    gr.Markdown("Train a TinyLLM from scratch on TinyWorld, here: the project's Accelerate loop "
                                "(`tinyllm train` on the demo's recipe) runs in a background process while its "
                                "loss, arithmetic and word map stream in. When it finishes, every tab opens on the "
                                "new model, its timeline included. One run at a time on this server; it ends when "
                                "this page goes away.")  # fmt: skip
                    with gr.Row():
                        mix = recipe_mix()
                        weights = [gr.Slider(0, 1, value=mix.get(family, 0.0), step=0.05, label=f"mix: {family}",
                                             elem_id=f"train-{family}") for family in FAMILY_CONTROLS]  # fmt: skip
                    with gr.Row():
                        size = gr.Radio(list(SIZES), value="nano", label="size (debug: seconds; nano: the demo's "
                                        "model, minutes)", elem_id="train-size")  # fmt: skip
                        train_steps = gr.Number(value=300, precision=0, label="steps", elem_id="train-steps")
                    with gr.Row():
                        start_button = gr.Button("Start", variant="primary", elem_id="train-start")
                        pause_run = gr.Button("Pause", elem_id="train-pause")
                        resume_run = gr.Button("Resume", elem_id="train-resume")
                        stop_run = gr.Button("Stop", elem_id="train-stop")
                    train_status = gr.Markdown(STATES["idle"], elem_id="train-status")
                    with gr.Row():
                        train_loss = gr.Plot(label="loss", elem_id="train-loss")
                        train_arithmetic = gr.Plot(label="arithmetic", elem_id="train-arithmetic")
                    train_map = gr.Plot(label="word map", elem_id="train-map")
                    ticker = gr.Timer(1.0, active=False)
                    finished = gr.State(None)

        # The timeline: one step moves every view (and the word chosen on the map stays chosen).
        def at_step(at: float, *inputs):
            be, lens, chosen, text = inputs[:4], inputs[4:8], inputs[8], inputs[9]
            return (studio.timeline_status(at), *reveal_all(*be, at), *studio.layers(*lens, at),
                    *show_map(at, chosen), *studio.learning(at), *studio.truth_along(text, at))  # fmt: skip

        view_inputs = [prompt, temperature, top_k, top_p, lens_prompt, position, layer, head, clicked, along_text]
        view_outputs = [timeline_status, *reveal, *lens_outputs, *map_outputs, *learning_outputs, *along_outputs]
        step.release(at_step, [step, *view_inputs], view_outputs, api_name="at_step")

        def play(at: float, *inputs):
            steps = studio.steps
            start = studio.recorded_step(at)
            frames = steps[steps.index(start) + 1 :] if start is not None and start != steps[-1] else steps
            for frame in frames:
                yield frame, *at_step(frame, *inputs)
                time.sleep(PLAY_SECONDS)

        wire_guide(guide_buttons, tabs, {
            "along": (studio.truth_along, [along_text, step], along_outputs),
            "layers": (studio.layers, lens_inputs, lens_outputs),
            "step": (microscope.run, step_inputs, step_outputs),
            "context": (compare_contexts, context_inputs, context_outputs),
            "steer": (steerer.steer, steer_inputs, steer_outputs),
            "flip_rates": (steerer.flip_rates, flip_inputs, flip_outputs),
        })  # fmt: skip

        playing = play_button.click(play, [step, *view_inputs], [step, *view_outputs], api_name=False)
        pause_button.click(None, None, None, cancels=[playing], api_name=False)

        if train_dir is not None:

            def start(size: str, steps: float, royalty: float, arithmetic: float, facts: float, sayings: float,
                      request: gr.Request):  # fmt: skip
                status = trainer.start(request.session_hash, size, steps, royalty, arithmetic, facts, sayings)
                return status, gr.Timer(active=trainer.live.poll().active)

            start_button.click(start, [size, train_steps, *weights], [train_status, ticker], api_name="train_start")
            pause_run.click(trainer.pause, None, train_status, api_name="train_pause")
            resume_run.click(trainer.resume, None, train_status, api_name="train_resume")
            stop_run.click(trainer.stop, None, train_status, api_name="train_stop")

            def tick():
                status, loss, arithmetic, word_plot_now, active, done = trainer.poll()
                if done is not None:  # every tab (and every API call) shows the new model from now on
                    studio.open_model(done)
                return status, loss, arithmetic, word_plot_now or gr.skip(), gr.Timer(active=active), done

            def open_finished(done: str | None, *inputs):
                if done is None:
                    return [gr.skip()] * (2 + len(view_outputs))
                steps = studio.steps
                low, high, value, gap = _slider_range(steps)
                slider = gr.update(minimum=low, maximum=high, value=value, step=gap)
                return slider, gr.update(visible=bool(steps)), *at_step(value if steps else None, *inputs)

            ticker.tick(tick, None, [train_status, train_loss, train_arithmetic, train_map, ticker, finished],
                        api_name="train_poll").then(open_finished, [finished, *view_inputs],
                                                    [step, timeline_row, *view_outputs], api_name=False)  # fmt: skip

            def leave(request: gr.Request):
                trainer.close_for(request.session_hash)

            app.unload(leave)

    return app


def _slider_range(steps: list[int]) -> tuple[int, int, int, int]:
    """The timeline slider's minimum, maximum, value (the last step) and step (the gcd of the gaps): the recorded
    steps and nothing between them when they are evenly spaced; a hidden 0..1 slider without a timeline."""
    if len(steps) < 2:
        return 0, 1, steps[0] if steps else 0, 1
    gap = math.gcd(*(b - a for a, b in itertools.pairwise(steps)))
    return steps[0], steps[-1], steps[-1], gap


__all__ = ["TITLE", "build_app"]
