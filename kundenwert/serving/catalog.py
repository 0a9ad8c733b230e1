"""The action catalog: what kundenwert may suggest, through which channels, at what cost, to whom,
and how often. A TOML file validated by pydantic before anything is served; the packaged default
(``kundenwert/defaults/actions.toml``) fits the sample world, ``KUNDENWERT_ACTIONS`` or ``--actions``
names another.

Each action has a ``value`` formula (and a ``propensity`` formula, by default the response model's
probability for that action and channel) over the model outputs of a customer and the action's own
``params``: ``"clv * churn * save_rate"``. Formulas are parsed once, allow only numbers, names, the
four arithmetic operators and ``min``/``max``, and are evaluated on whole columns at once.
"""

from __future__ import annotations

import ast
import operator
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kundenwert.defaults import default_file
from kundenwert.errors import ConfigurationError
from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.kinds import KindName, action_kind

DEFAULT_CATALOG = default_file("actions.toml")  # shipped in the wheel

Status = Literal["active", "lapsed", "new"]
CustomerType = Literal["consumer", "business", "retailer"]
STATUSES: tuple[Status, ...] = ("active", "lapsed", "new")
CUSTOMER_TYPES: tuple[CustomerType, ...] = ("consumer", "business", "retailer")

# Names a formula may use besides the action's params: per-customer model outputs and facts
# (``affinity_<category>`` and ``margin_<category>`` for every category of the store).
# Names a formula may use besides the models' stored scores (``score_names``): the propensity of a
# pair (``response``, ``uplift``), P(alive) from BG/NBD and facts every scoring run holds.
PAIR_NAMES = ("response", "uplift")
FACT_NAMES = ("p_alive", "monetary_value", "frequency")


def score_names() -> tuple[str, ...]:
    """Every per-customer score a formula or an eligibility range may name: each model's stored
    column as its spec says (a model registered with ``register_spec`` included), then the pair
    and fact names. Per-category scores (``affinity_<category>``) are ``PER_CATEGORY``."""
    from kundenwert.models.specs import stored_scores

    return (*stored_scores()[0], *PAIR_NAMES, *FACT_NAMES)


PER_CATEGORY = ("affinity_", "margin_")


def score_providers() -> tuple[dict[str, str], dict[str, str]]:
    """Which model gives each score a formula may name: (score name -> model, prefix -> model),
    as the specs say (``Stored``: a column, per-category columns under the label's prefix, or
    the per-action ``response`` and ``uplift``). Facts and P(alive) come from no model."""
    from kundenwert.models.specs import SPECS

    names: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for spec in SPECS.values():
        stored = spec.stores
        if stored.per_action is not None:
            names.update(dict.fromkeys(PAIR_NAMES, spec.name))
        elif stored.predict is not None and spec.label.per_column:
            prefixes[spec.label.column] = spec.name
        elif stored.predict is not None:
            names[stored.column or spec.name] = spec.name
    return names, prefixes


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCS = {"min": np.minimum, "max": np.maximum}


class Formula:
    """An arithmetic formula over named columns, checked when parsed, evaluated vectorised."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ValueError(f"cannot parse formula {text!r}: {exc.msg}") from None
        self.names: set[str] = set()
        self._check(self._tree.body)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            self._check(node.operand)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            pass
        elif isinstance(node, ast.Name):
            self.names.add(node.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and len(node.args) == 2
            and not node.keywords
        ):
            for arg in node.args:
                self._check(arg)
        else:
            what = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
            raise ValueError(
                f"formula {self.text!r}: {what!r} is not allowed (numbers, names, + - * /, min(a, b), max(a, b))"
            )

    def __call__(self, values: dict[str, object]) -> np.ndarray:
        return np.asarray(self._eval(self._tree.body, values), dtype="float64")

    def _eval(self, node: ast.AST, values: dict[str, object]):
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        if isinstance(node, ast.UnaryOp):
            return -self._eval(node.operand, values)
        if isinstance(node, ast.Constant):
            return float(node.value)  # type: ignore[arg-type]  # parsing admitted numbers only
        if isinstance(node, ast.Name):
            return values[node.id]
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # min/max, as parsed
        a, b = (self._eval(arg, values) for arg in node.args)
        return _FUNCS[node.func.id](a, b)

    def __repr__(self) -> str:
        return f"Formula({self.text!r})"


class ChannelPolicy(BaseModel):
    """How often one channel may carry a contact to the same customer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_contacts_7d: int | None = Field(None, ge=0, description="outbound contacts in the last 7 days")
    max_contacts_30d: int | None = Field(None, ge=0, description="outbound contacts in the last 30 days")
    min_days_between: float | None = Field(None, ge=0, description="days since the last outbound contact")
    suppress_after_ignored: int | None = Field(
        None, ge=1, description="stop offering an action after this many ignored contacts of it in a row"
    )


class Eligibility(BaseModel):
    """Who may get an action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: tuple[Status, ...] = STATUSES
    customer_types: tuple[CustomerType, ...] = CUSTOMER_TYPES
    complaint: Literal["any", "required", "forbidden"] = "any"  # an open complaint
    scores: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=dict, description="score name -> [min, max] (either may be omitted as none)"
    )


class Action(BaseModel):
    """One thing kundenwert may suggest."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    kind: KindName = Field(description="one of serving.kinds.ACTION_KINDS")
    title: str = Field(min_length=1, description="what sales and marketing read")
    category: str | None = None
    channels: dict[str, float] = Field(description="channel -> cost of one contact")
    value: str = Field(description="expected value if the customer responds (formula)")
    propensity: str = Field("response", description="probability of a response (formula)")
    ranking: Literal["auto", "uplift", "response"] = Field(
        "auto",
        description="what the score ranks by: `uplift`, the incremental value the contact earns "
        "(the propensity formula with the model's uplift for `response`, x value x lever - cost); "
        "`response`, the value if contacted (propensity x value x lever - cost); `auto`, uplift "
        "where the response model learnt it for the action (its training rows held a control "
        "group), else response",
    )
    params: dict[str, float] = Field(default_factory=dict)
    explore: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of the decisions that would show this action first which show a random "
        "eligible candidate first instead (exploration, see serving.exploration); unset: the "
        "catalog's `exploration`",
    )
    lever: float = Field(1.0, ge=0, description="business priority: multiplies the expected value")
    control_share: float = Field(0.1, ge=0, lt=1, description="share held out to measure the effect")
    eligibility: Eligibility = Eligibility()
    policy: dict[str, ChannelPolicy] = Field(
        default_factory=dict, description="per channel, over the default"
    )

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("name at least one channel")
        for ch, cost in v.items():
            if ch not in MARKETING_CHANNELS:
                raise ValueError(f"unknown channel {ch!r}; channels are {', '.join(MARKETING_CHANNELS)}")
            if not np.isfinite(cost) or cost < 0:
                raise ValueError(f"cost of {ch} must be a number >= 0, not {cost}")
        return v

    @model_validator(mode="after")
    def _formulas(self) -> Action:
        for name in ("value", "propensity"):
            Formula(getattr(self, name))  # raises with the formula named
        unknown = set(self.policy) - set(self.channels)
        if unknown:
            raise ValueError(f"policy for channel(s) {', '.join(sorted(unknown))} the action does not use")
        if action_kind(self.kind).by_category and not self.category:
            raise ValueError(f"a {self.kind} action needs its category")
        return self

    def formula(self, name: Literal["value", "propensity"]) -> Formula:
        return Formula(getattr(self, name))

    @property
    def needs(self) -> set[str]:
        """The scores the action reads: its formulas' names and its eligibility score ranges
        (its params left out)."""
        names = self.formula("value").names | self.formula("propensity").names | set(self.eligibility.scores)
        return names - set(self.params)


class Catalog(BaseModel):
    """All actions and the default contact policy per channel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: dict[str, ChannelPolicy] = Field(default_factory=dict, description="default per channel")
    exploration: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of decisions (per channel) that show a random eligible candidate first, "
        "each decision logging the probability of what it showed (an action's `explore` overrides)",
    )
    actions: list[Action]

    @field_validator("policy")
    @classmethod
    def _policy_channels(cls, v: dict[str, ChannelPolicy]) -> dict[str, ChannelPolicy]:
        unknown = set(v) - set(MARKETING_CHANNELS)
        if unknown:
            raise ValueError(f"unknown channel(s) {', '.join(sorted(unknown))}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        ids = [a.id for a in self.actions]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"action ids must be unique: {', '.join(twice)} appear more than once")
        if not ids:
            raise ValueError("the catalog has no actions")
        return self

    def action(self, action_id: str) -> Action:
        for a in self.actions:
            if a.id == action_id:
                return a
        raise ConfigurationError(f"unknown action {action_id!r}; actions are: {', '.join(self.ids)}")

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.actions]

    def channel_policy(self, action: Action, channel: str) -> ChannelPolicy:
        """The action's policy for ``channel`` over the catalog's default (fields set win)."""
        base = self.policy.get(channel, ChannelPolicy())
        own = action.policy.get(channel)
        if own is None:
            return base
        return base.model_copy(update=own.model_dump(exclude_unset=True))

    def unavailable(self, models, margins: dict[str, float] | None = None) -> dict[str, str]:
        """The actions a scoring run with ``models`` (names) cannot serve, each with why: it
        needs a score of a model the run has none of (``needs clv: no clv model in this scoring
        run``), or, given the store's ``margins``, the margin of a category nobody bought.
        Every other action is served as usual; with every model, none is unavailable."""
        names, prefixes = score_providers()
        have = set(models)
        out = {}
        for a in self.actions:
            why = []
            for name in sorted(a.needs):
                model = names.get(name) or next((m for p, m in prefixes.items() if name.startswith(p)), None)
                if model is not None and model not in have:
                    why.append(f"needs {name}: no {model} model in this scoring run")
                elif margins is not None and name.startswith("margin_") and name[7:] not in margins:
                    why.append(f"needs {name}: no purchases of {name[7:]} in the store")
            if why:
                out[a.id] = "; ".join(why)
        return out

    def check_names(self, categories: list[str]) -> None:
        """Every formula and score range names a known model output, category or param. A store
        without categories (no purchases) cannot tell a category's names from misspelt ones:
        any ``affinity_``/``margin_`` name and category pass (``unavailable`` then keeps such
        actions from being suggested)."""
        names = score_names()
        known = set(names) | {p + c for p in PER_CATEGORY for c in categories}
        if not categories:
            known |= {n for a in self.actions for n in a.needs if n.startswith(PER_CATEGORY)}
        for a in self.actions:
            if a.category is not None and categories and a.category not in categories:
                raise ConfigurationError(
                    f"action {a.id}: unknown category {a.category!r}; categories are {', '.join(categories)}"
                )
            for name in ("value", "propensity"):
                unknown = a.formula(name).names - known - set(a.params)
                if unknown:
                    raise ConfigurationError(
                        f"action {a.id}: {name} formula {getattr(a, name)!r} uses unknown name(s) "
                        f"{', '.join(sorted(unknown))}; known: model outputs {', '.join(names)}, "
                        f"affinity_<category>, margin_<category> and the action's params"
                    )
            bad = set(a.eligibility.scores) - known
            if bad:
                raise ConfigurationError(
                    f"action {a.id}: eligibility.scores names unknown score(s) {', '.join(sorted(bad))}"
                )


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The validated catalog at ``path``; without one, the file ``KUNDENWERT_ACTIONS`` names, else
    the packaged default."""
    if path is None:
        from kundenwert.settings import get_settings

        path = get_settings().actions
    source: Path | Traversable = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"action catalog {source} does not exist") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigurationError(f"action catalog {source} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"action catalog {source} is not valid TOML: {exc}") from None
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "actions" and isinstance(loc[1], int):
                actions = raw.get("actions", [])
                ident = actions[loc[1]].get("id", f"#{loc[1] + 1}") if loc[1] < len(actions) else loc[1]
                loc[1] = ident
            problems.append(f"{'.'.join(str(x) for x in loc)}: {err['msg']}")
        raise ConfigurationError(f"action catalog {source}: " + "; ".join(problems)) from None
