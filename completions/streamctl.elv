
use builtin;
use str;

set edit:completion:arg-completer[streamctl] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'streamctl'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'streamctl'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)'
            cand start 'Open a stream and print its id'
            cand send 'Send stdin lines into a stream, one record per line'
            cand tail 'Print a stream''s results as they arrive'
            cand bench 'Measure the whole path, open loop: latency percentiles, rates, and every record accounted for'
            cand top 'Live view of the daemon''s streams: rates, subscribers, latency, a stream''s results'
            cand streams 'List, show or end streams'
            cand token 'Print a scoped token for one stream (subscribe and/or send), to use instead of the key'
            cand version 'Print this client''s version and the daemon''s'
            cand completions 'Print a shell completion script'
            cand man 'Print a man page (roff): streamctl''s, or a subcommand''s (streamctl man tail)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'streamctl;serve'= {
            cand -c 'YAML config file (see config.example.yaml); without it, built-in defaults'
            cand --config 'YAML config file (see config.example.yaml); without it, built-in defaults'
            cand --listen 'Address to listen on [default: 127.0.0.1:8080]'
            cand --brokers '`embedded` or HOST:PORT[,HOST:PORT...] [default: embedded]'
            cand --api-key 'Accept this API key (repeatable); adds to the keys of the config file'
            cand --log-format 'Log format [default: pretty; from the config file if it sets log.format]'
            cand --check 'Check the config (file, flags, key, TLS certificates, a JWKS file) and exit: 0 when valid, 1 with the reason; a dry run of a start or a reload'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;start'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand -p 'Processor: a name (identity, uppercase) or a JSON spec such as ''{"type":"uppercase"}'''
            cand --processor 'Processor: a name (identity, uppercase) or a JSON spec such as ''{"type":"uppercase"}'''
            cand --schema 'A JSON Schema file every record must match (checked before anything is stored), or `ref:NAME` for a schema named in the daemon''s config'
            cand --result-schema 'A JSON Schema file every result must match (one that does not becomes an error frame)'
            cand --json 'Print the daemon''s whole JSON answer instead of the id'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;send'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand --processor 'Processor of the new stream (with --new)'
            cand --batch-bytes 'Largest NDJSON request body; keep it under the daemon''s limits.max_body_bytes'
            cand --batch-records 'Most lines in one request; keep it under the daemon''s limits.max_records_per_request'
            cand --connect-timeout 'Give up (exit 1) when the daemon cannot be reached for this long, e.g. 30s, 5m'
            cand --idempotency-prefix 'Start of each batch''s idempotency key (`PREFIX-FIRST-LAST`, its stdin line numbers); given, batches are cut by size only (not by timing), so running the same input again with the same prefix stores nothing twice [default: a random one per run]'
            cand --traceparent 'W3C trace context (`00-TRACE_ID-SPAN_ID-01`) the records are sent under: with the daemon''s `telemetry` on, their trace goes on through processing to the result frames (`tail --format ''{trace_id} {data}''`)'
            cand --new 'Start a new stream first and print its id on stdout'
            cand --strict 'Refuse lines that are not valid JSON instead of sending them as strings'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;tail'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand -f 'json (whole frames), data (only the data; with several streams, the stream id, a tab, then the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type}, {idempotency_key}, {traceparent}, {trace_id} (of a traced record''s result) and the escapes \n and \t; each result ends with one newline'
            cand --format 'json (whole frames), data (only the data; with several streams, the stream id, a tab, then the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type}, {idempotency_key}, {traceparent}, {trace_id} (of a traced record''s result) and the escapes \n and \t; each result ends with one newline'
            cand -o 'Where to start: earliest, latest, a cursor (inclusive), or -N for the last N results. kcat''s words work too: `-o beginning`, `-o end`, `-o -10`'
            cand --from 'Where to start: earliest, latest, a cursor (inclusive), or -N for the last N results. kcat''s words work too: `-o beginning`, `-o end`, `-o -10`'
            cand -c 'Exit after printing this many results'
            cand --count 'Exit after printing this many results'
            cand -e 'Exit after the results that exist now (kcat''s -e), or at the stream''s end frame if that comes first; without it, tail follows live results'
            cand --exit-on-end 'Exit after the results that exist now (kcat''s -e), or at the stream''s end frame if that comes first; without it, tail follows live results'
            cand --no-gaps 'Exit 1 at the first gap (results the broker no longer holds, so they cannot be printed) instead of warning and going on'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;bench'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand --streams 'Streams to open, each with one WebSocket subscriber'
            cand --rate 'Records per second, all streams together (open loop: sent on schedule regardless of how fast the daemon answers)'
            cand --duration 'How long to send, e.g. 30s, 2m'
            cand --payload-bytes 'Size of each JSON record'
            cand --transport 'How records are sent: http (NDJSON requests) or ws (frames on the subscriber sockets)'
            cand --processor 'The bench streams'' processor, as for `streamctl start` (a name or a JSON spec); it must keep the record''s `q` field (e.g. `{"type":"jq","filter":". + {seen: true}"}`), which matches results to records. Default: identity'
            cand --subscribers 'Results subscribers (WebSockets) per stream: measures fan-out. Each record is then expected once on every one of them'
            cand --source-addresses 'Spread the results sockets over this many loopback source addresses (127.0.0.1 to 127.0.0.N), for more sockets than one client address may hold (a quarter of the daemon''s `limits.max_connections`). For a daemon on this machine'
            cand --mux 'Follow the streams over `/api/connect`, this many streams per connection, instead of one WebSocket per stream (with --transport http and one subscriber per stream)'
            cand --traced 'Share of HTTP requests (0 to 1) sent with a sampled `traceparent` of their own: with the daemon''s `telemetry` on, what tracing costs (compare a run at 0 with one at 1)'
            cand --batch 'Records per HTTP request (or per burst of WebSocket frames)'
            cand --max-in-flight 'HTTP requests awaiting their answer at once; beyond it, sends queue (and their latency, counted from the schedule, grows)'
            cand --drain-timeout 'After sending, how long to wait for acknowledged records still on their way'
            cand --brokers 'The daemon''s broker, for --baseline against --url (HOST:PORT[,...])'
            cand --baseline-partitions 'Partitions of the baseline''s topic, if it must be created (the daemon''s default is 12)'
            cand --baseline-kafka 'A librdkafka setting for the baseline''s clients (repeatable). Give it the daemon''s `kafka` settings for a like-for-like comparison'
            cand --max-p99-ms 'With --find-max: the end-to-end p99 (ms) a rate must keep to count as sustainable'
            cand --step 'With --find-max: factor from one rate to the next'
            cand --broker-pid 'The broker''s process id, when it runs on this machine: its CPU per 1 000 records is reported beside the daemon''s'
            cand --fault-drop-every 'Test-only fault: ignore every Nth result frame, as if it never arrived'
            cand --embedded 'Start a daemon in this process on the embedded broker instead of using --url'
            cand --idempotency 'Send every HTTP request with an `Idempotency-Key` of its own (what the client libraries do): measures what the key costs'
            cand --baseline 'First run the same load with rdkafka straight on the broker, for comparison; with --subscribers above 1, through a raw WebSocket broadcaster in this process instead (no Kafka), and report the ratio of deliveries/s within --max-p99-ms (`fan_out`)'
            cand --find-max 'Step the rate up from --rate until a bound breaks; report the highest that held'
            cand --json 'Print the report as JSON (fields documented in docs/benchmarks.md)'
            cand --no-progress 'No live progress line (it is only drawn when stderr is a terminal anyway)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;top'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand --interval 'Time between snapshots, e.g. 1s, 500ms'
            cand --once 'Print one plain-text snapshot and exit (also what happens when stdout is not a terminal)'
            cand --json 'With --once (or when stdout is not a terminal): print the daemon''s stats as JSON (`GET /api/stats`) instead of text'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;streams'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand --json 'Print JSON instead of a table'
            cand -q 'Print stream ids only, one per line (for scripts: `streamctl streams -q | xargs ...`)'
            cand --quiet 'Print stream ids only, one per line (for scripts: `streamctl streams -q | xargs ...`)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List your streams (all streams for an admin key), newest first (the default)'
            cand info 'Show one stream: owner, processor, state, counters'
            cand end 'End a stream: later sends are refused, subscribers get an end frame'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'streamctl;streams;list'= {
            cand --json 'Print JSON instead of a table'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;streams;info'= {
            cand --json 'Print JSON instead of a table'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;streams;end'= {
            cand --json 'Print JSON instead of a table'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;streams;help'= {
            cand list 'List your streams (all streams for an admin key), newest first (the default)'
            cand info 'Show one stream: owner, processor, state, counters'
            cand end 'End a stream: later sends are refused, subscribers get an end frame'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'streamctl;streams;help;list'= {
        }
        &'streamctl;streams;help;info'= {
        }
        &'streamctl;streams;help;end'= {
        }
        &'streamctl;streams;help;help'= {
        }
        &'streamctl;token'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand -s 'What the token may do; repeat or separate with commas for both'
            cand --scope 'What the token may do; repeat or separate with commas for both'
            cand --ttl 'Lifetime in seconds (the daemon caps it at limits.max_token_ttl_s)'
            cand --json 'Print the daemon''s whole JSON answer (with `expires_at`) instead of the token'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;version'= {
            cand --url 'Daemon URL'
            cand --api-key 'API key [default: the key file written by `streamctl serve`]'
            cand --cacert 'PEM file of CA certificates to trust besides the public roots, for a daemon whose certificate a private CA signed (`https://` URLs)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;completions'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;man'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'streamctl;help'= {
            cand serve 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)'
            cand start 'Open a stream and print its id'
            cand send 'Send stdin lines into a stream, one record per line'
            cand tail 'Print a stream''s results as they arrive'
            cand bench 'Measure the whole path, open loop: latency percentiles, rates, and every record accounted for'
            cand top 'Live view of the daemon''s streams: rates, subscribers, latency, a stream''s results'
            cand streams 'List, show or end streams'
            cand token 'Print a scoped token for one stream (subscribe and/or send), to use instead of the key'
            cand version 'Print this client''s version and the daemon''s'
            cand completions 'Print a shell completion script'
            cand man 'Print a man page (roff): streamctl''s, or a subcommand''s (streamctl man tail)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'streamctl;help;serve'= {
        }
        &'streamctl;help;start'= {
        }
        &'streamctl;help;send'= {
        }
        &'streamctl;help;tail'= {
        }
        &'streamctl;help;bench'= {
        }
        &'streamctl;help;top'= {
        }
        &'streamctl;help;streams'= {
            cand list 'List your streams (all streams for an admin key), newest first (the default)'
            cand info 'Show one stream: owner, processor, state, counters'
            cand end 'End a stream: later sends are refused, subscribers get an end frame'
        }
        &'streamctl;help;streams;list'= {
        }
        &'streamctl;help;streams;info'= {
        }
        &'streamctl;help;streams;end'= {
        }
        &'streamctl;help;token'= {
        }
        &'streamctl;help;version'= {
        }
        &'streamctl;help;completions'= {
        }
        &'streamctl;help;man'= {
        }
        &'streamctl;help;help'= {
        }
    ]
    $completions[$command]
}
