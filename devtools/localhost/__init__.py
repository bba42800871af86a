"""The local host: runs function_app.py on one machine as the Functions host would (HTTP on
127.0.0.1, timers on their NCRONTAB schedules, queue triggers from Azurite or memory)."""
