"""The one scenario table every translator's contract test runs.

Each provider's ``test_<provider>.py`` parametrises over ``SCENARIOS`` and
implements every row for its upstream; a row that an upstream cannot serve
natively must still give an OpenAI-correct answer (emulated) or a clear
invalid_request_error naming the field — never a silent wrong answer.
"""

SCENARIOS = (
    "text",                  # one user turn -> text, finish stop, usage
    "multi_turn",            # system + user/assistant/user history
    "system_prompt",         # system (and developer) messages reach the upstream's system slot
    "tool_single",           # one tool, model calls it: finish tool_calls, id + name + JSON arguments
    "tool_parallel",         # two tools called in one turn with distinct indexes 0 and 1
    "tool_forced",           # tool_choice names a function -> that function is called
    "tool_round_trip",       # assistant tool_calls + tool results sent back -> text answer
    "tool_stream",           # streaming tool call: first delta has id+name, later deltas argument fragments
    "json_object",           # response_format json_object -> content parses as a JSON object
    "json_schema",           # response_format json_schema -> content validates against the schema
    "image",                 # user content part image_url (data URI) reaches the upstream as an image
    "reasoning",             # reasoning output -> ChoiceDelta.reasoning
    "stop",                  # stop sequences reach the upstream
    "max_tokens_length",     # max_tokens hit -> finish_reason length
    "error_400", "error_401", "error_404", "error_429", "error_500", "error_503",  # mapped + retryable flag
    "stream_cut",            # stream closed without terminator -> UpstreamProtocolError
)
