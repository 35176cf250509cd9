"""Work orders: the model, its state machine, and the functions the API calls."""

from hub.workorders.attendance import (
    add_leave,
    attendance_log,
    cancel_leave,
    check_in,
    check_out,
    leaves,
    on_duty,
    register_badge,
)
from hub.workorders.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
from hub.workorders.errors import (
    BadInput,
    ClosureRefused,
    InvalidTransition,
    NotFound,
    WorkOrderError,
)
from hub.workorders.model import Transition, WorkOrder
from hub.workorders.service import (
    add_evidence,
    create_order,
    delivery_status,
    evidence_of,
    get_order,
    history,
    list_orders,
    rate_order,
    transition,
)

__all__ = [
    "SYSTEM_CLOCK", "BadInput", "Clock", "ClosureRefused", "InvalidTransition", "ManualClock", "NotFound",
    "SystemClock", "Transition", "WorkOrder", "WorkOrderError", "add_evidence", "add_leave", "attendance_log", "cancel_leave",
    "check_in", "check_out", "create_order", "delivery_status", "evidence_of", "get_order", "history",
    "leaves", "list_orders", "on_duty", "rate_order", "register_badge", "transition",
]
