"""The notification service: who must hear of what happened (events → in-app notifications, emails and
partner webhooks), each recipient's preferences, and the organization's webhook endpoints (issue 13)."""
