//go:build linux

package server

import (
	"errors"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/store"
)

// openAIFile is a file object in the shape of OpenAI's Files API.
type openAIFile struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at,omitempty"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	MIMEType  string `json:"mime_type"`
	SessionID string `json:"session_id,omitempty"`
}

func fileView(f store.File) openAIFile {
	v := openAIFile{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(), Filename: f.Filename,
		Purpose: f.Purpose, MIMEType: f.MIMEType, SessionID: f.SessionID}
	if !f.ExpiresAt.IsZero() {
		t := f.ExpiresAt.Unix()
		v.ExpiresAt = &t
	}
	return v
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return invalid("file", "upload a file as multipart/form-data with the field 'file'")
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return invalid("file", "bad multipart body: %v", err)
	}
	purpose := "user_data"
	for {
		part, err := mr.NextPart()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large", Message: "upload is over the limit"}
			}
			return invalid("file", "the multipart body has no field 'file'")
		}
		switch part.FormName() {
		case "purpose":
			b := make([]byte, 64)
			n, _ := part.Read(b)
			purpose = strings.TrimSpace(string(b[:n]))
			if purpose == "" {
				return invalid("purpose", "purpose is empty")
			}
		case "file":
			name := path.Base(part.FileName())
			if name == "" || name == "." || name == "/" {
				return invalid("file", "the file part needs a filename")
			}
			if err := executor.CheckPath(name); err != nil {
				return invalid("file", "%v", err)
			}
			f := store.File{Owner: owner, Filename: name, Purpose: purpose, MIMEType: executor.MIMEType(name)}
			if s.cfg.FileTTL > 0 {
				f.ExpiresAt = time.Now().Add(s.cfg.FileTTL)
			}
			f, err := s.putFile(r.Context(), f, part)
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.Is(err, store.ErrQuota) {
					return s.quotaFull()
				}
				if errors.Is(err, store.ErrTooLarge) || errors.As(err, &mbe) {
					return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "file_too_large",
						Message: "the file is over the upload limit"}
				}
				if isGone(r.Context(), err) {
					return nil
				}
				return s.internal(r, "store upload", err)
			}
			s.metrics.fileBytes.WithLabelValues("upload").Add(float64(f.Bytes))
			writeJSON(w, http.StatusOK, fileView(f))
			return nil
		default:
			return invalid(part.FormName(), "unknown field %q", part.FormName())
		}
	}
}

func (s *Server) handleListFiles(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	files, err := s.store.ListFiles(r.Context(), owner, "")
	if err != nil {
		return s.internal(r, "list files", err)
	}
	out := make([]openAIFile, 0, len(files))
	for _, f := range files {
		out = append(out, fileView(f))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
	return nil
}

func (s *Server) handleGetFile(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	f, err := s.store.File(r.Context(), owner, r.PathValue("id"))
	if err != nil {
		return notFound("file", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, fileView(f))
	return nil
}

func (s *Server) handleFileContent(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	return s.serveStored(w, r, owner, r.PathValue("id"))
}

func (s *Server) serveStored(w http.ResponseWriter, r *http.Request, owner, id string) *apiError {
	f, meta, err := s.store.OpenFile(r.Context(), owner, id)
	if err != nil {
		return notFound("file", id)
	}
	defer f.Close()
	setDownloadHeaders(w, meta.Filename, meta.MIMEType)
	http.ServeContent(w, r, "", meta.CreatedAt, f)
	s.metrics.fileBytes.WithLabelValues("download").Add(float64(meta.Bytes))
	return nil
}

// setDownloadHeaders marks a response as a file to save, never a page to
// render: a file's content comes from sandboxed code or a client, and an
// HTML or SVG one must not run script in the service's origin. The
// browser is told to download it (Content-Disposition), not to guess
// another type (nosniff), and, should it render it anyway, to run and
// load nothing (the CSP sandbox gives it an opaque origin).
func setDownloadHeaders(w http.ResponseWriter, name, mimeType string) {
	h := w.Header()
	h.Set("Content-Type", mimeType)
	disp := mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(name)})
	if disp == "" { // a name mime cannot quote
		disp = "attachment"
	}
	h.Set("Content-Disposition", disp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
}

func (s *Server) handleDeleteFile(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	if err := s.store.DeleteFile(r.Context(), owner, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("file", id)
		}
		return s.internal(r, "delete file", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
	return nil
}
