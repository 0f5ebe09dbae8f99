
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'streamctl' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'streamctl'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'streamctl' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)')
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Open a stream and print its id')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send stdin lines into a stream, one record per line')
            [CompletionResult]::new('tail', 'tail', [CompletionResultType]::ParameterValue, 'Print a stream''s results as they arrive')
            [CompletionResult]::new('streams', 'streams', [CompletionResultType]::ParameterValue, 'List, show or end streams')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print the man page (roff)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;serve' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'YAML config file (see config.example.yaml); without it, built-in defaults')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'YAML config file (see config.example.yaml); without it, built-in defaults')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on [default: 127.0.0.1:8080]')
            [CompletionResult]::new('--brokers', '--brokers', [CompletionResultType]::ParameterName, '`embedded` or HOST:PORT[,HOST:PORT...] [default: embedded]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'Accept this API key (repeatable); adds to the keys of the config file')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: pretty or json')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;start' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Processor: a name (identity, uppercase) or a JSON spec such as ''{"type":"uppercase"}''')
            [CompletionResult]::new('--processor', '--processor', [CompletionResultType]::ParameterName, 'Processor: a name (identity, uppercase) or a JSON spec such as ''{"type":"uppercase"}''')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the daemon''s whole JSON answer instead of the id')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;send' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--processor', '--processor', [CompletionResultType]::ParameterName, 'Processor of the new stream (with --new)')
            [CompletionResult]::new('--batch-bytes', '--batch-bytes', [CompletionResultType]::ParameterName, 'Largest NDJSON request body; keep it under the daemon''s limits.max_body_bytes')
            [CompletionResult]::new('--new', '--new', [CompletionResultType]::ParameterName, 'Start a new stream first and print its id on stdout')
            [CompletionResult]::new('--strict', '--strict', [CompletionResultType]::ParameterName, 'Refuse lines that are not valid JSON instead of sending them as strings')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;tail' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'json (whole frames), data (only the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type} and the escapes \n and \t')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'json (whole frames), data (only the data), or a template with placeholders {data}, {cursor}, {input_offset}, {input_partition}, {received_ms}, {processed_ms}, {stream_id}, {type} and the escapes \n and \t')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Where to start: earliest, latest, or a cursor (inclusive)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Exit after printing this many results')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Exit after printing this many results')
            [CompletionResult]::new('-e', '-e', [CompletionResultType]::ParameterName, 'Exit when the stream has ended (its end frame), instead of printing a notice')
            [CompletionResult]::new('--exit-on-end', '--exit-on-end', [CompletionResultType]::ParameterName, 'Exit when the stream has ended (its end frame), instead of printing a notice')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Daemon URL')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the key file written by `streamctl serve`]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your streams (all streams for an admin key), newest first (the default)')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Show one stream: owner, processor, state, counters')
            [CompletionResult]::new('end', 'end', [CompletionResultType]::ParameterValue, 'End a stream: later sends are refused, subscribers get an end frame')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;streams;list' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams;info' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams;end' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;streams;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your streams (all streams for an admin key), newest first (the default)')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Show one stream: owner, processor, state, counters')
            [CompletionResult]::new('end', 'end', [CompletionResultType]::ParameterValue, 'End a stream: later sends are refused, subscribers get an end frame')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;streams;help;list' {
            break
        }
        'streamctl;streams;help;info' {
            break
        }
        'streamctl;streams;help;end' {
            break
        }
        'streamctl;streams;help;help' {
            break
        }
        'streamctl;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;man' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'streamctl;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the daemon (zero config: embedded broker on 127.0.0.1:8080 with a local key)')
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Open a stream and print its id')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send stdin lines into a stream, one record per line')
            [CompletionResult]::new('tail', 'tail', [CompletionResultType]::ParameterValue, 'Print a stream''s results as they arrive')
            [CompletionResult]::new('streams', 'streams', [CompletionResultType]::ParameterValue, 'List, show or end streams')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print the man page (roff)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'streamctl;help;serve' {
            break
        }
        'streamctl;help;start' {
            break
        }
        'streamctl;help;send' {
            break
        }
        'streamctl;help;tail' {
            break
        }
        'streamctl;help;streams' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your streams (all streams for an admin key), newest first (the default)')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Show one stream: owner, processor, state, counters')
            [CompletionResult]::new('end', 'end', [CompletionResultType]::ParameterValue, 'End a stream: later sends are refused, subscribers get an end frame')
            break
        }
        'streamctl;help;streams;list' {
            break
        }
        'streamctl;help;streams;info' {
            break
        }
        'streamctl;help;streams;end' {
            break
        }
        'streamctl;help;completions' {
            break
        }
        'streamctl;help;man' {
            break
        }
        'streamctl;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
