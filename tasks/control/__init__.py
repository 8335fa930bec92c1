"""Control: the notification task's record and state, and what pause and cancel do to its messages."""
