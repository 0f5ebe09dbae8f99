# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_streamctl_global_optspecs
    string join \n h/help V/version
end

function __fish_streamctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_streamctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_streamctl_using_subcommand
    set -l cmd (__fish_streamctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c streamctl -n "__fish_streamctl_needs_command" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_needs_command" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "serve" -d 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "start" -d 'Open a stream and print its id'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "send" -d 'Send stdin lines into a stream, one record per line'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "tail" -d 'Print a stream\'s results as they arrive'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "bench" -d 'Measure the whole path, open loop: latency percentiles, rates, and every record accounted for'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "top" -d 'Live view of the daemon\'s streams: rates, subscribers, latency, a stream\'s results'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "streams" -d 'List, show or end streams'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "token" -d 'Print a scoped token for one stream (subscribe and/or send), to use instead of the key'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "version" -d 'Print this client\'s version and the daemon\'s'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "man" -d 'Print a man page (roff): streamctl\'s, or a subcommand\'s (streamctl man tail)'
complete -c streamctl -n "__fish_streamctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -s c -l config -d 'YAML config file (see config.example.yaml); without it, built-in defaults' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -l listen -d 'Address to listen on [default: 127.0.0.1:8080]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -l brokers -d '`embedded` or HOST:PORT[,HOST:PORT...] [default: embedded]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -l api-key -d 'Accept this API key (repeatable); adds to the keys of the config file' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -l log-format -d 'Log format [default: pretty; from the config file if it sets log.format]' -r -f -a "pretty\t''
json\t''"
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -l check -d 'Check the config (file, flags, key, TLS certificates, a JWKS file) and exit: 0 when valid, 1 with the reason; a dry run of a start or a reload'
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand serve" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -s p -l processor -d 'Processor: a name (identity, uppercase) or a JSON spec such as \'{"type":"uppercase"}\'' -r -f
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -l schema -d 'A JSON Schema file every record must match (checked before anything is stored), or `ref:NAME` for a schema named in the daemon\'s config' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -l result-schema -d 'A JSON Schema file every result must match (one that does not becomes an error frame)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -l json -d 'Print the daemon\'s whole JSON answer instead of the id'
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand start" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l processor -d 'Processor of the new stream (with --new)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l batch-bytes -d 'Largest NDJSON request body; keep it under the daemon\'s limits.max_body_bytes' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l batch-records -d 'Most lines in one request; keep it under the daemon\'s limits.max_records_per_request' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l connect-timeout -d 'Give up (exit 1) when the daemon cannot be reached for this long, e.g. 30s, 5m' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l idempotency-prefix -d 'Start of each batch\'s idempotency key (`PREFIX-FIRST-LAST`, its stdin line numbers); given, batches are cut by size only (not by timing), so running the same input again with the same prefix stores nothing twice [default: a random one per run]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l traceparent -d 'W3C trace context (`00-TRACE_ID-SPAN_ID-01`) the records are sent under: with the daemon\'s `telemetry` on, their trace goes on through processing to the result frames (`tail --format \'{trace_id} {data}\'`)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l new -d 'Start a new stream first and print its id on stdout'
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -l strict -d 'Refuse lines that are not valid JSON instead of sending them as strings'
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand send" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -s f -l format -d 'json (whole frames), data (only the data; with several streams, the stream id, a tab, then the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type}, {idempotency_key}, {traceparent}, {trace_id} (of a traced record\'s result) and the escapes \\n and \\t; each result ends with one newline' -r -f
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -s o -l from -d 'Where to start: earliest, latest, a cursor (inclusive), or -N for the last N results. kcat\'s words work too: `-o beginning`, `-o end`, `-o -10`' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -s c -l count -d 'Exit after printing this many results' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -s e -l exit-on-end -d 'Exit after the results that exist now (kcat\'s -e), or at the stream\'s end frame if that comes first; without it, tail follows live results'
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -l no-gaps -d 'Exit 1 at the first gap (results the broker no longer holds, so they cannot be printed) instead of warning and going on'
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand tail" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l streams -d 'Streams to open, each with one WebSocket subscriber' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l rate -d 'Records per second, all streams together (open loop: sent on schedule regardless of how fast the daemon answers)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l duration -d 'How long to send, e.g. 30s, 2m' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l payload-bytes -d 'Size of each JSON record' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l transport -d 'How records are sent: http (NDJSON requests) or ws (frames on the subscriber sockets)' -r -f -a "http\t''
ws\t''"
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l processor -d 'The bench streams\' processor, as for `streamctl start` (a name or a JSON spec); it must keep the record\'s `q` field (e.g. `{"type":"jq","filter":". + {seen: true}"}`), which matches results to records. Default: identity' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l subscribers -d 'Results subscribers (WebSockets) per stream: measures fan-out. Each record is then expected once on every one of them' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l source-addresses -d 'Spread the results sockets over this many loopback source addresses (127.0.0.1 to 127.0.0.N), for more sockets than one client address may hold (a quarter of the daemon\'s `limits.max_connections`). For a daemon on this machine' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l mux -d 'Follow the streams over `/api/connect`, this many streams per connection, instead of one WebSocket per stream (with --transport http and one subscriber per stream)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l traced -d 'Share of HTTP requests (0 to 1) sent with a sampled `traceparent` of their own: with the daemon\'s `telemetry` on, what tracing costs (compare a run at 0 with one at 1)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l batch -d 'Records per HTTP request (or per burst of WebSocket frames)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l max-in-flight -d 'HTTP requests awaiting their answer at once; beyond it, sends queue (and their latency, counted from the schedule, grows)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l drain-timeout -d 'After sending, how long to wait for acknowledged records still on their way' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l brokers -d 'The daemon\'s broker, for --baseline against --url (HOST:PORT[,...])' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l baseline-partitions -d 'Partitions of the baseline\'s topic, if it must be created (the daemon\'s default is 12)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l baseline-kafka -d 'A librdkafka setting for the baseline\'s clients (repeatable). Give it the daemon\'s `kafka` settings for a like-for-like comparison' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l max-p99-ms -d 'With --find-max: the end-to-end p99 (ms) a rate must keep to count as sustainable' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l step -d 'With --find-max: factor from one rate to the next' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l broker-pid -d 'The broker\'s process id, when it runs on this machine: its CPU per 1 000 records is reported beside the daemon\'s' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l fault-drop-every -d 'Test-only fault: ignore every Nth result frame, as if it never arrived' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l embedded -d 'Start a daemon in this process on the embedded broker instead of using --url'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l idempotency -d 'Send every HTTP request with an `Idempotency-Key` of its own (what the client libraries do): measures what the key costs'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l baseline -d 'First run the same load with rdkafka straight on the broker, for comparison; with --subscribers above 1, through a raw WebSocket broadcaster in this process instead (no Kafka), and report the ratio of deliveries/s within --max-p99-ms (`fan_out`)'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l find-max -d 'Step the rate up from --rate until a bound breaks; report the highest that held'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l json -d 'Print the report as JSON (fields documented in docs/benchmarks.md)'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -l no-progress -d 'No live progress line (it is only drawn when stderr is a terminal anyway)'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand bench" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -l interval -d 'Time between snapshots, e.g. 1s, 500ms' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -l once -d 'Print one plain-text snapshot and exit (also what happens when stdout is not a terminal)'
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -l json -d 'With --once (or when stdout is not a terminal): print the daemon\'s stats as JSON (`GET /api/stats`) instead of text'
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand top" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -l json -d 'Print JSON instead of a table'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -s q -l quiet -d 'Print stream ids only, one per line (for scripts: `streamctl streams -q | xargs ...`)'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -f -a "list" -d 'List your streams (all streams for an admin key), newest first (the default)'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -f -a "info" -d 'Show one stream: owner, processor, state, counters'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -f -a "end" -d 'End a stream: later sends are refused, subscribers get an end frame'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and not __fish_seen_subcommand_from list info end help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from list" -l json -d 'Print JSON instead of a table'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from info" -l json -d 'Print JSON instead of a table'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from info" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from info" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from end" -l json -d 'Print JSON instead of a table'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from end" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from end" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from help" -f -a "list" -d 'List your streams (all streams for an admin key), newest first (the default)'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from help" -f -a "info" -d 'Show one stream: owner, processor, state, counters'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from help" -f -a "end" -d 'End a stream: later sends are refused, subscribers get an end frame'
complete -c streamctl -n "__fish_streamctl_using_subcommand streams; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -s s -l scope -d 'What the token may do; repeat or separate with commas for both' -r -f -a "subscribe\t'Read the stream\'s results (WebSocket or Server-Sent Events)'
send\t'Send records into the stream'"
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -l ttl -d 'Lifetime in seconds (the daemon caps it at limits.max_token_ttl_s)' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -l json -d 'Print the daemon\'s whole JSON answer (with `expires_at`) instead of the token'
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c streamctl -n "__fish_streamctl_using_subcommand token" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand version" -l url -d 'Daemon URL' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand version" -l api-key -d 'API key [default: the key file written by `streamctl serve`]' -r
complete -c streamctl -n "__fish_streamctl_using_subcommand version" -l cacert -d 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)' -r -F
complete -c streamctl -n "__fish_streamctl_using_subcommand version" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand version" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand man" -s h -l help -d 'Print help'
complete -c streamctl -n "__fish_streamctl_using_subcommand man" -s V -l version -d 'Print version'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "serve" -d 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "start" -d 'Open a stream and print its id'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "send" -d 'Send stdin lines into a stream, one record per line'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "tail" -d 'Print a stream\'s results as they arrive'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "bench" -d 'Measure the whole path, open loop: latency percentiles, rates, and every record accounted for'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "top" -d 'Live view of the daemon\'s streams: rates, subscribers, latency, a stream\'s results'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "streams" -d 'List, show or end streams'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "token" -d 'Print a scoped token for one stream (subscribe and/or send), to use instead of the key'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "version" -d 'Print this client\'s version and the daemon\'s'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "man" -d 'Print a man page (roff): streamctl\'s, or a subcommand\'s (streamctl man tail)'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and not __fish_seen_subcommand_from serve start send tail bench top streams token version completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and __fish_seen_subcommand_from streams" -f -a "list" -d 'List your streams (all streams for an admin key), newest first (the default)'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and __fish_seen_subcommand_from streams" -f -a "info" -d 'Show one stream: owner, processor, state, counters'
complete -c streamctl -n "__fish_streamctl_using_subcommand help; and __fish_seen_subcommand_from streams" -f -a "end" -d 'End a stream: later sends are refused, subscribers get an end frame'
