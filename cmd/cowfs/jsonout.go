package main

import (
	"encoding/json"
	"io"
)

// jsonFlagHelp is the help of every command's --json.
const jsonFlagHelp = "print one JSON object per result, a line each (fields: docs/cli.md)"

// writeJSON writes v as one line of JSON: commands with --json print one
// such line per result, so that a script reads them with jq or line by
// line, whatever it prints on stderr meanwhile.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
