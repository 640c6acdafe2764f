"""The inbound edge: an authenticated HTTP ingress for opens, clicks, unsubscribes, providers'
webhooks, call status callbacks and inbound mail. Every request becomes at most one wire
event, answered only after the event is durably accepted."""
