package openapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
)

// download sends a download request with header and validates its answer
// against the document, as do does for a request with a body.
func (c *checker) download(t *testing.T, method, path string, header http.Header, status int) {
	t.Helper()
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, method, c.e.URL+path, nil)
	require.NoError(t, err)
	req.Header = header.Clone()
	route, params, err := c.router.FindRoute(req)
	require.NoError(t, err, "%s %s is in the document", method, path)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: options}
	require.NoError(t, openapi3filter.ValidateRequest(ctx, in), "%s %s: request", method, path)

	r := c.e.Send(t, method, c.e.URL+path, gatewaytest.Anonymous, header, "")
	require.Equal(t, status, r.Status, "%s %s: %s", method, path, r.Body)
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: r.Status, Header: r.Header,
		Body: io.NopCloser(bytes.NewReader(r.Body)), Options: options,
	}
	assert.NoError(t, openapi3filter.ValidateResponse(ctx, out), "%s %s: answer %d %s", method, path, r.Status, r.Body)
}

func TestDownloadAnswersMatchTheDocument(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	c := newChecker(t, e)
	ctx := t.Context()
	id := "DownloadDoc000001"
	content := strings.Repeat("0123456789", 100)
	key := "jobs/" + id + "/parts/0/general.csv"
	_, err := e.MinIO.Store.Upload(ctx, gatewaytest.ExportBucket, key, strings.NewReader(content), "text/csv")
	require.NoError(t, err)
	job := &exportv1.Job{
		Id: id, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_CSV,
		State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now(),
	}
	_, err = e.Jobs.Apply(ctx, &exportv1.ExportRequested{JobId: id, OccurredAt: job.GetCreatedAt(), Job: job})
	require.NoError(t, err)
	sum := strings.Repeat("ab", 32)
	_, err = e.Jobs.Apply(ctx, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{
		{Name: "general.csv", ObjectKey: key, Size: uint64(len(content)), Sha256: sum, ContentType: "text/csv"},
	}})
	require.NoError(t, err)
	link := gatewaytest.SignedLink("", id, "general.csv")

	c.download(t, http.MethodGet, link, nil, http.StatusOK)
	c.download(t, http.MethodHead, link, nil, http.StatusOK)
	c.download(t, http.MethodGet, link, http.Header{"Range": {"bytes=10-"}, "If-Range": {`"` + sum + `"`}}, http.StatusPartialContent)
	c.download(t, http.MethodGet, link, http.Header{"Range": {"bytes=0-1,5-6"}}, http.StatusPartialContent)
	c.download(t, http.MethodGet, link, http.Header{"Range": {"bytes=5000-"}}, http.StatusRequestedRangeNotSatisfiable)
	c.download(t, http.MethodGet, link, http.Header{"If-None-Match": {`"` + sum + `"`}}, http.StatusNotModified)
	c.download(t, http.MethodGet, link, http.Header{"If-Match": {`"x"`}}, http.StatusPreconditionFailed)
}
