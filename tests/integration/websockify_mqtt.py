#!/usr/bin/python3
"""websockify (Debian's python3-websockify) that accepts the WebSocket subprotocol "mqtt".

MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5 §6) requires the client to offer the subprotocol
"mqtt", and paho.mqtt.c 1.3 sends "Sec-WebSocket-Protocol: mqtt". websockify 0.10 selects
"binary" or nothing and then refuses a client that offered something else:
"HTTP/1.1 400 Invalid protocol selected". This runs websockify's own proxy, with its own
command line, and changes only that choice: "mqtt" when offered. Framing (binary frames
both ways) and proxying stay websockify's.

Usage: websockify_mqtt.py [websockify options] LISTEN_HOST:PORT TARGET_HOST:PORT
"""
import sys

from websockify import websocketproxy, websockifyserver


class MqttWebSocket(websockifyserver.CompatibleWebSocket):
    def select_subprotocol(self, protocols):
        offered = [p.strip() for p in protocols]
        if "mqtt" in offered:
            # websocket.py checks that the choice is one of the (unstripped) offers.
            return protocols[offered.index("mqtt")]
        return super().select_subprotocol(protocols)


websocketproxy.ProxyRequestHandler.SocketClass = MqttWebSocket
sys.argv[0] = "websockify"
websocketproxy.websockify_init()
