"""``modules/fifo_lock.py`` of Forge main / Neo: unchanged from A1111 1.10.1 where the extension touches it
(FORGE_SDNEXT_FACTS.md), so the A1111 stand-in's text runs here."""

from modules._a1111 import include

include(__name__)
