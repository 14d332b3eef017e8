"""What the optimization service needs to talk to dsbridge, in both directions.

- `airflow`: the Airflow REST client that triggers, follows and cancels requests;
- `receiver`: verifies a signed callback and returns a typed `CallbackEvent`;
- `store`: keeps each event once and, per request, the one that counts (`RequestStore`).
"""

from dsbridge.callback.signing import PayloadError, SignatureError
from dsbridge.client.airflow import TERMINAL_RUN_STATES, AirflowApiError, AirflowClient
from dsbridge.client.receiver import CallbackEvent, CallbackReceiver, EventError, EventLinks, InvalidEvent, parse_event
from dsbridge.client.store import Recorded, RequestState, RequestStore, StoredEvent

__all__ = [
    "TERMINAL_RUN_STATES",
    "AirflowApiError",
    "AirflowClient",
    "CallbackEvent",
    "CallbackReceiver",
    "EventError",
    "EventLinks",
    "InvalidEvent",
    "PayloadError",
    "Recorded",
    "RequestState",
    "RequestStore",
    "SignatureError",
    "StoredEvent",
    "parse_event",
]
