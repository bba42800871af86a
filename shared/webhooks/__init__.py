"""Webhooks: authentication schemes (halaxy, hmac-sha256, standard-webhooks) and notifications."""
