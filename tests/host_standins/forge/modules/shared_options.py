"""``modules/shared_options.py`` of Forge main / Neo: the built-in settings the extension and the stand-in read have
A1111 1.10.1's keys and defaults (FORGE_SDNEXT_FACTS.md), so the A1111 stand-in's text runs here."""

from modules._a1111 import include

include(__name__)
