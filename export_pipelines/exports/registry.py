"""Export types with logic of their own, by registry name; every other type is its registry entry alone.

Imported by the steps that run a type's logic (stages.py), so loading the code location imports no
type module, nor polars, pyarrow or pymongoarrow with them."""

from export_pipelines.exports import (
    artist_sms_opt_in,
    code_waves,
    entries,
    fanlist,
    promoter_email_opt_in,
    reminder_email,
    waitlist,
)
from export_pipelines.exports.contract import TypeLogic

TYPE_LOGIC: dict[str, TypeLogic] = {
    "entries": entries.LOGIC,
    "artistSmsOptIn": artist_sms_opt_in.LOGIC,
    "codeWaves": code_waves.LOGIC,
    "fanlist": fanlist.LOGIC,
    "waitlist": waitlist.LOGIC,
    "promoterEmailOptIn": promoter_email_opt_in.LOGIC,
    "reminderEmail": reminder_email.LOGIC,
    "reminderEmailSample": reminder_email.LOGIC,
    "autoReminderEmail": reminder_email.LOGIC,
}
NO_LOGIC = TypeLogic()


def logic_of(export_type: str) -> TypeLogic:
    return TYPE_LOGIC.get(export_type, NO_LOGIC)
