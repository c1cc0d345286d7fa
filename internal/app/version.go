package app

import (
	"fmt"
	"io"
	"runtime/debug"
)

// printVersion writes the build information of the running binary: the main
// module's version, the VCS revision, time and modified flag, and the Go
// version. Fields the build did not record are printed as "unknown".
func printVersion(w io.Writer, info *debug.BuildInfo, ok bool) {
	if !ok || info == nil {
		fmt.Fprintln(w, "microshop: no build information")
		return
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	get := func(k string) string {
		if v := settings[k]; v != "" {
			return v
		}
		return "unknown"
	}
	version := info.Main.Version
	if version == "" {
		version = "unknown"
	}
	fmt.Fprintf(w, "microshop %s\n", version)
	fmt.Fprintf(w, "revision: %s\n", get("vcs.revision"))
	fmt.Fprintf(w, "time:     %s\n", get("vcs.time"))
	fmt.Fprintf(w, "modified: %s\n", get("vcs.modified"))
	fmt.Fprintf(w, "go:       %s\n", info.GoVersion)
}
