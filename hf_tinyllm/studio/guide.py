"""The studio's guided path: numbered steps in the essays' order, each a short text and a button that opens the view
showing the idea on the loaded model (and, where a view needs a click to compute, runs it). The words live in
`guide/<language>.yaml`, so a translation touches no code; this module only reads and lays them out."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import yaml

GUIDE_DIR = Path(__file__).parent / "guide"


@dataclass
class GuideLink:
    view: str  # the id of the tab the button opens
    button: str
    action: str | None = None  # what the button runs in that view, if the view needs a click to show anything
    fallback: str | None = None  # the tab to open when `view` is not on this page (the Train tab of a Space)


@dataclass
class GuideStep:
    title: str
    text: str
    links: list[GuideLink]


@dataclass
class Guide:
    title: str
    intro: str
    steps: list[GuideStep]


def _link(entry: dict) -> GuideLink:
    return GuideLink(entry["view"], entry["button"], entry.get("action"), entry.get("fallback"))


def load_guide(language: str = "en") -> Guide:
    """The guide in `language` (guide/<language>.yaml)."""
    path = GUIDE_DIR / f"{language}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in GUIDE_DIR.glob("*.yaml"))
        raise ValueError(f"no studio guide in {language!r}; the guide exists in {', '.join(known)}.")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    steps = [GuideStep(step["title"], step["text"], [_link(step)] + ([_link(step["more"])] if "more" in step else []))
             for step in data["steps"]]  # fmt: skip
    return Guide(data["title"], data["intro"], steps)


# An action: the function to run, its inputs and its outputs, as for a Gradio event.
Action = tuple[Callable, list, list]


def build_guide(guide: Guide, views: set[str]) -> list[tuple[gr.Button, str, str | None]]:
    """Lay the guide out in the current Blocks context: per step its number, title, text and buttons, one per link
    whose view (or fallback) is among the page's tab ids `views`. Returns (button, view, action) for `wire_guide`,
    called once the views exist."""
    gr.Markdown(f"## {guide.title}\n{guide.intro}", elem_id="guide-intro")
    buttons = []
    for number, step in enumerate(guide.steps, start=1):
        with gr.Row(equal_height=True, elem_id=f"guide-step-{number}"):
            gr.Markdown(f"### {number}. {step.title}\n{step.text}", elem_classes="guide-text")
            with gr.Column(scale=0, min_width=230):
                for index, link in enumerate(step.links):
                    view = link.view if link.view in views else link.fallback
                    if view in views:
                        button = gr.Button(link.button, elem_id=f"guide-{number}-{index}", size="sm")
                        buttons.append((button, view, link.action if view == link.view else None))
    return buttons


def wire_guide(buttons: list[tuple[gr.Button, str, str | None]], tabs: gr.Tabs, actions: dict[str, Action]) -> None:
    """Each guide button selects its view among `tabs`, then runs its action from `actions` (if any)."""
    for button, view, action in buttons:
        event = button.click(lambda view=view: gr.Tabs(selected=view), None, tabs, api_name=False)
        if action is not None:
            function, inputs, outputs = actions[action]
            event.then(function, inputs, outputs, api_name=False)


__all__ = ["Guide", "GuideLink", "GuideStep", "build_guide", "load_guide", "wire_guide"]
