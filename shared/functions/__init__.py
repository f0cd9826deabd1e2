"""The Azure Functions triggers, one blueprint per area; function_app.py registers them.

Each trigger only parses its input and calls into shared/; no domain logic lives here.
"""
