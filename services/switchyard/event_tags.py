"""The first byte of a serialized ChatEvent/GenerateEvent is its oneof tag
(field number << 3 | length-delimited), so relays can tell an event's kind
without parsing it. GenerateEvent shares these field numbers with ChatEvent."""

CHUNK = 0x12  # field 2
USAGE = 0x22  # field 4
ERROR = 0x32  # field 6
TIMING = 0x3A  # field 7 (GenerateEvent only: the router folds it into STARTED)
STARTED = 0x0A  # field 1 (ChatEvent only)
TRACE = 0x1A  # field 3 (ChatEvent only)
