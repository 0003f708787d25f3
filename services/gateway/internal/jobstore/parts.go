package jobstore

import (
	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// PlanParts returns one PENDING PartStatus per task, numbered by position
// as submit.Submitter numbers the tasks, with the kind, room id and target
// file the task carries. Dialects that know more about a room (its name
// and type letter) fill that in before creating the job.
func PlanParts(tasks []*exportv1.ExportTask) []*exportv1.PartStatus {
	parts := make([]*exportv1.PartStatus, len(tasks))
	for i, t := range tasks {
		parts[i] = &exportv1.PartStatus{
			Part:       uint32(i),
			Kind:       t.GetPartKind(),
			RoomId:     t.GetRoom().GetRoomId(),
			TargetFile: t.GetTargetFile(),
			State:      exportv1.PartState_PART_STATE_PENDING,
		}
	}
	return parts
}

// partStatus returns the planned part numbered n, or nil for a job planned
// without parts (jobs created before parts were tracked) or an unknown n.
func partStatus(job *exportv1.Job, n uint32) *exportv1.PartStatus {
	for _, p := range job.GetParts() {
		if p.GetPart() == n {
			return p
		}
	}
	return nil
}

// partRank orders part states like rank orders job states.
func partRank(s exportv1.PartState) int {
	switch s {
	case exportv1.PartState_PART_STATE_PENDING:
		return 1
	case exportv1.PartState_PART_STATE_EXPORTING:
		return 2
	case exportv1.PartState_PART_STATE_COMPLETED:
		return 3
	}
	return 0
}

// advancePart moves p to state to if that is a step forward.
func advancePart(p *exportv1.PartStatus, to exportv1.PartState) bool {
	if partRank(to) <= partRank(p.GetState()) {
		return false
	}
	p.State = to
	return true
}

// partsProgress is the job's progress as its parts tell it: records is the
// sum of every part's exported count, and percent weighs every part the
// same, a completed part counting whole and the part that just reported
// (current, at currentPercent) by its fraction. Other running parts count
// as nothing here; grow keeps the larger of this and what was shown.
// Percent stays below 100 until the job is completed.
func partsProgress(job *exportv1.Job, current *exportv1.PartStatus, currentPercent uint32) (percent uint32, records uint64) {
	parts := job.GetParts()
	if len(parts) == 0 {
		return 0, 0
	}
	var done uint64
	for _, p := range parts {
		records += p.GetExported()
		if p.GetState() == exportv1.PartState_PART_STATE_COMPLETED {
			done += 100
		}
	}
	if current != nil && current.GetState() != exportv1.PartState_PART_STATE_COMPLETED {
		done += uint64(min(currentPercent, 100))
	}
	return uint32(min(done/uint64(len(parts)), maxRunningPercent)), records
}
