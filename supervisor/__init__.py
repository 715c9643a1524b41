"""OTP supervision over trio: child specs, strategies, restart intensity, dynamic children,
fault injection.

Imports nothing of Starling's: a generic layer over trio.
"""

from supervisor.backoff import Backoff
from supervisor.faults import FaultKind, FaultTarget, InjectedFault, leaked_tasks
from supervisor.spec import ChildKind, ChildSpec, RestartType, Stoppable, Strategy
from supervisor.statistics import ChildStatistics, SupervisorStatistics
from supervisor.supervisor import (
    ChildStartError,
    Supervisor,
    SupervisorError,
    TooManyRestarts,
)

__all__ = [
    "Backoff",
    "ChildKind",
    "ChildSpec",
    "ChildStartError",
    "ChildStatistics",
    "FaultKind",
    "FaultTarget",
    "InjectedFault",
    "RestartType",
    "Stoppable",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorStatistics",
    "TooManyRestarts",
    "leaked_tasks",
]
