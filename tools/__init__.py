"""Development tools: Azurite launcher, local Functions host, Azure (ARM) simulator.

None of this is deployed (see .funcignore); it exists so the app runs and is tested locally
against real services instead of in-memory fakes.
"""
