"""Spend per phase and per session, from the provider records: the budget caps
(SAMOCODE_MAX_COST_USD, SAMOCODE_MAX_PHASE_COST_USD) checked before an iteration starts, and what is
left of them (passed to Claude as --max-budget-usd, which stops inside an iteration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.config import Settings


@dataclass
class Spend:
    """Spend per phase in USD, counted from history lines (each attempt's cost appears once)."""

    by_phase: dict[str, float] = field(default_factory=dict)
    known: bool = False  # any cost reported at all

    def add(self, record: dict) -> None:
        cost = record.get("cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            phase = str(record.get("phase"))
            self.by_phase[phase] = self.by_phase.get(phase, 0.0) + float(cost)
            self.known = True

    @property
    def total(self) -> float:
        return sum(self.by_phase.values())

    def over_budget(self, phase: str, settings: Settings) -> str:
        """Why no further iteration may start, or ''."""
        cap = settings.max_cost_usd
        if cap and self.total >= cap:
            return f"session spend ${self.total:.2f} reached SAMOCODE_MAX_COST_USD ${cap:.2f}"
        phase_cap = settings.max_phase_cost_usd
        spent = self.by_phase.get(phase, 0.0)
        if phase_cap and spent >= phase_cap:
            return f"phase {phase} spend ${spent:.2f} reached SAMOCODE_MAX_PHASE_COST_USD ${phase_cap:.2f}"
        return ""

    def remaining(self, phase: str, settings: Settings) -> float | None:
        """What is left of the tighter of the two caps (None when neither is set); what Claude is
        given as --max-budget-usd, so a budget is also held inside an iteration."""
        left = []
        if settings.max_cost_usd:
            left.append(settings.max_cost_usd - self.total)
        if settings.max_phase_cost_usd:
            left.append(settings.max_phase_cost_usd - self.by_phase.get(phase, 0.0))
        return max(min(left), 0.0) if left else None

    def overview_text(self) -> str:
        """'$1.23 (implementation $0.80, testing $0.43)': the Total Cost field."""
        phases = ", ".join(f"{p} ${c:.2f}" for p, c in self.by_phase.items() if c)
        return f"${self.total:.2f}" + (f" ({phases})" if phases else "")
