"""The words of the API that its command-line client shares: export statuses, webhook events, destination
types, fields and defaults. Plain constants importing nothing, so the client takes them from here (it loads
neither the database driver nor the transports) instead of keeping a copy; the modules that own each concern
import them from here too.
"""

# Export records (SPEC §4): an export is PENDING, then TRIGGERED, then ends FINISHED, FAILED or EXPIRED.
PENDING, TRIGGERED, FINISHED, FAILED, EXPIRED = "PENDING", "TRIGGERED", "FINISHED", "FAILED", "EXPIRED"
STATUSES = (PENDING, TRIGGERED, FINISHED, FAILED, EXPIRED)
ACTIVE = (PENDING, TRIGGERED)
ENDED = (FINISHED, FAILED, EXPIRED)
RERUNNABLE = (FAILED, EXPIRED)

# Webhook events (SPEC §11). An export's deliveries to its destinations (SPEC §13) end with one of
# DELIVERY_EVENTS, the delivery in `data.delivery`.
PAUSED_EVENT = "schedule.paused"
DELIVERY_EVENTS = ("export.delivered", "export.delivery_failed")
EXPORT_EVENTS = ("export.finished", "export.failed", "export.expired", *DELIVERY_EVENTS)
SCHEDULE_EVENTS = (PAUSED_EVENT,)
WEBHOOK_EVENTS = EXPORT_EVENTS + SCHEDULE_EVENTS

# Destinations (SPEC §13): the fields of a POST, per type.
SFTP, S3, SFMC = "sftp", "s3", "sfmc"
DESTINATION_TYPES = (SFTP, S3, SFMC)
DEFAULT_PORT = 22
DEFAULT_FILE_NAME = "{name}_{exportId}.{ext}"
S3_ACLS = ("bucket-owner-full-control", "none")  # the first is the default
COMMON_FIELDS = ("type", "name", "pgpPublicKey", "fileName")
SFTP_FIELDS = ("host", "port", "username", "path", "hostKey", "password", "generateKey")
S3_FIELDS = ("bucket", "prefix", "region", "roleArn", "externalId", "acl")
DESTINATION_FIELDS = {SFTP: SFTP_FIELDS, SFMC: SFTP_FIELDS, S3: S3_FIELDS}
