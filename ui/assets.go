package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Assets serves the page's files (index.html, app.js, style.css) from the binary. Mount it under a
// prefix with http.StripPrefix; the page finds the stream at ../v1/events relative to itself, so mount it
// one level below the root that serves /v1/events (for example at /ui/).
func Assets() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// The folder is embedded at build time: it cannot be missing.
		panic("ui: embedded assets: " + err.Error())
	}
	fsrv := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page is small and changes with the binary: always revalidate, never show a stale script.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fsrv.ServeHTTP(w, r)
	})
}
