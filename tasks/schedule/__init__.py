"""Schedule per window: when each message may go out, in the subscriber's local time."""
