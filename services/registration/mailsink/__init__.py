"""Lab mail sink: an SMTP server that keeps messages in memory and shows them over HTTP."""
