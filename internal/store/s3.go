package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Blobs keeps each content as the object <prefix><id> in a bucket of an
// S3-compatible object store. A content is uploaded in one PUT when it is
// smaller than s3PartSize and as a multipart upload otherwise; either way
// the object appears whole when the upload completes, or not at all. An
// upload that fails is aborted; one cut short by a crash leaves parts that
// the bucket's lifecycle rule (AbortIncompleteMultipartUpload) should
// remove, since another node may be uploading at the same time and no
// node can tell its parts from a crashed one's.
//
// Unlike a file on disk, an opened content is read from the bucket while it
// is read: a content deleted after OpenFile may fail to read to the end.
type s3Blobs struct {
	c              *minio.Client
	bucket, prefix string
}

// s3PartSize is the size of the parts of a multipart upload, and so what
// one upload of a large content holds in memory (twice: the first part is
// read ahead to tell small contents from large ones). S3's smallest part is
// 5 MiB.
const s3PartSize = 8 << 20

// newS3Blobs connects to the bucket rawURL names:
//
//	s3://bucket[/prefix]?endpoint=https://host:port&region=name
//
// endpoint defaults to https://s3.amazonaws.com and region to what the
// endpoint says; with a prefix, each key is prefix/<id>. The credentials are
// getenv's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, if set,
// AWS_SESSION_TOKEN. It fails unless the bucket exists and the credentials
// may see it.
func newS3Blobs(ctx context.Context, rawURL string, getenv func(string) string) (*s3Blobs, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("blob store %q: want s3://bucket[/prefix]?endpoint=...&region=...", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("blob store %q: credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL", u.Redacted())
	}
	b := &s3Blobs{bucket: u.Host, prefix: strings.Trim(u.Path, "/")}
	if b.prefix != "" {
		b.prefix += "/"
	}
	q := u.Query()
	endpoint, region := "https://s3.amazonaws.com", q.Get("region")
	if e := q.Get("endpoint"); e != "" {
		endpoint = e
	}
	for k := range q {
		if k != "endpoint" && k != "region" {
			return nil, fmt.Errorf("blob store: unknown parameter %q (want endpoint and region)", k)
		}
	}
	ep, err := url.Parse(endpoint)
	if err != nil || (ep.Scheme != "http" && ep.Scheme != "https") || ep.Host == "" || strings.Trim(ep.Path, "/") != "" || ep.User != nil {
		return nil, fmt.Errorf("blob store: endpoint %q: want http(s)://host[:port]", endpoint)
	}
	id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		return nil, errors.New("blob store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	b.c, err = minio.New(ep.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(id, secret, getenv("AWS_SESSION_TOKEN")),
		Secure: ep.Scheme == "https",
		Region: region,
	})
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	ok, err := b.c.BucketExists(ctx, b.bucket)
	if err != nil {
		return nil, fmt.Errorf("blob store: bucket %q at %s: %w", b.bucket, ep.Host, err)
	}
	if !ok {
		return nil, fmt.Errorf("blob store: bucket %q at %s does not exist", b.bucket, ep.Host)
	}
	return b, nil
}

func (b *s3Blobs) key(id string) (string, error) {
	if !validID(id) {
		return "", fmt.Errorf("invalid content id %q: %w", id, fs.ErrNotExist)
	}
	return b.prefix + id, nil
}

func (b *s3Blobs) put(ctx context.Context, id string, r io.Reader, limit int64) (int64, error) {
	key, err := b.key(id)
	if err != nil {
		return 0, err
	}
	lr := &limitReader{r: ctxReader{ctx, r}, left: limit}
	var head bytes.Buffer
	if _, err := head.ReadFrom(io.LimitReader(lr, s3PartSize)); err != nil {
		return 0, fmt.Errorf("read content %s: %w", id, err)
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: s3PartSize}
	if head.Len() < s3PartSize {
		// All of it: one PUT.
		_, err = b.c.PutObject(ctx, b.bucket, key, bytes.NewReader(head.Bytes()), int64(head.Len()), opts)
	} else {
		_, err = b.c.PutObject(ctx, b.bucket, key, io.MultiReader(&head, lr), -1, opts)
	}
	if err != nil {
		// The upload may have completed with only its answer lost.
		if derr := b.c.RemoveObject(context.WithoutCancel(ctx), b.bucket, key, minio.RemoveObjectOptions{}); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove: %w", derr))
		}
		if errors.Is(err, ErrTooLarge) {
			return 0, ErrTooLarge
		}
		return 0, fmt.Errorf("store content %s: %w", id, err)
	}
	return lr.n, nil
}

func (b *s3Blobs) open(ctx context.Context, id string) (io.ReadSeekCloser, error) {
	key, err := b.key(id)
	if err != nil {
		return nil, err
	}
	obj, err := b.c.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	// GetObject sends nothing yet; Stat tells a missing content now.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		if e := minio.ToErrorResponse(err); e.Code == "NoSuchKey" || e.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("content %s: %w", id, fs.ErrNotExist)
		}
		return nil, err
	}
	return obj, nil
}

func (b *s3Blobs) delete(ctx context.Context, id string) error {
	key, err := b.key(id)
	if err != nil {
		return err
	}
	// S3 answers a delete of a missing key with success.
	return b.c.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{})
}

// limitReader reads from r until more than left bytes come, and then
// fails with ErrTooLarge; n counts what it returned.
type limitReader struct {
	r    io.Reader
	left int64
	n    int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	// One byte more than allowed tells "exactly left" from "more".
	if int64(len(p))-1 > l.left {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		return 0, ErrTooLarge
	}
	l.left -= int64(n)
	l.n += int64(n)
	return n, err
}
