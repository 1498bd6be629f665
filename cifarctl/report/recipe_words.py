"""How a configuration label names the modern recipe (issue 19): `+SAM ρ=0.4`, `RandAug`, ...

    recipe_words({"optim.sam_rho": "0.4", "data.augment": "randaugment", ...})
    # (" +SAM ρ=0.4", ["RandAug"], {"optim.sam_rho", "data.augment", ...})

SAM is named with the loss ("LDAM-DRW +SAM ρ=0.4"); the data side (policy, Cutout, mixing),
the cosine schedule and label smoothing are parts of their own. Settings at their defaults
say nothing: the labels of runs without the recipe name none of it. Torch- and pandas-free.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from cifarctl.config.rules import AUGMENT_POLICIES, LABEL_AWARE

POLICY_WORDS = {"randaugment": "RandAug", "autoaugment": "AutoAug"}
POLICIES = "data.augment (policies)"  # in a label's `varying` keys: some config has a policy
# every recipe key a label says in its own words (the generic `key=value` parts skip them);
# `data.augment` only when it names a policy: true / false keep their generic words
WORDED_KEYS = frozenset({"optim.sam_rho", "optim.schedule", "optim.min_lr", "data.cutout",
                         "data.randaugment_n", "data.randaugment_m", "data.mixup_alpha",
                         "data.cutmix_alpha", "data.mix_prob", "loss.smoothing",
                         "loss.smoothing_head", "loss.smoothing_tail"})


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _policy(p: Mapping[str, str]) -> str:
    return str(p.get("data.augment", "")).lower()


def _data_words(p: Mapping[str, str]) -> list[str]:
    words = []
    policy = _policy(p)
    if policy in POLICY_WORDS:
        word = POLICY_WORDS[policy]
        n, m = _number(p.get("data.randaugment_n", "2")), _number(p.get("data.randaugment_m", "9"))
        if policy == "randaugment" and (n, m) != (2, 9):
            word += f" N={n:g} M={m:g}"
        words.append(word)
    if _number(p.get("data.cutout")):
        words.append(f"Cutout {_number(p['data.cutout']):g}")
    mixing = [f"{name} α={_number(p[key]):g}" for name, key in
              (("mixup", "data.mixup_alpha"), ("CutMix", "data.cutmix_alpha"))
              if _number(p.get(key))]
    prob = _number(p.get("data.mix_prob", "1"))
    if mixing and prob != 1:
        mixing[-1] += f" p={prob:g}"
    return words + mixing


def policies_compared(configs: Sequence[Mapping[str, str]]) -> set[str]:
    """{POLICIES} when some of `configs` use a named policy: a label then names every
    config's augmentation (`crop-flip` for true); without one, true / false keep their
    generic words."""
    named = any(_policy(c) in AUGMENT_POLICIES for c in configs)
    return {POLICIES} if named else set()


def recipe_words(p: Mapping[str, str], varying: Collection[str] = ()
                 ) -> tuple[str, list[str], set[str]]:
    """(the words after the loss's, the label's other recipe parts, the keys they name);
    `varying` as `groups.label_varying` gives it."""
    rho, policy = _number(p.get("optim.sam_rho")), _policy(p) in AUGMENT_POLICIES
    after_loss = f" +SAM ρ={rho:g}" if rho else ""
    parts = []
    data = _data_words(p)
    if POLICIES in varying and not policy:
        data.insert(0, "crop-flip" if str(p.get("data.augment")) == "True" else "no augment")
    if data:
        parts.append(" + ".join(data))
    if p.get("optim.schedule") == "cosine":
        low = _number(p.get("optim.min_lr"))
        parts.append("cosine" + (f" to {low:g}" if low else ""))
    smoothing = str(p.get("loss.smoothing", "0"))
    if smoothing == LABEL_AWARE:
        parts.append("label-aware LS")
    elif _number(smoothing):
        parts.append(f"LS ε={_number(smoothing):g}")
    named = set(WORDED_KEYS) | {POLICIES}  # named here or at their defaults: no `key=value`
    if POLICIES in varying or policy:
        named.add("data.augment")
    return after_loss, parts, named
