//! The stable reasons of an object's and an environment's health: a closed
//! enum whose names (`as_str`) are fit for conditions and metric labels.

crate::condition::names! {
    /// Why an object or an environment has the health it has (`CamelCase`,
    /// kstatus's spelling where kstatus has one).
    Reason {
        /// The object is current (every kind); the environment is ready.
        Current = "Current",
        NotFound = "NotFound",
        /// The target has not observed the object yet (its watch has not synced).
        NotObserved = "NotObserved",
        /// `metadata.deletionTimestamp` is set, or a Namespace is in phase
        /// `Terminating`.
        Terminating = "Terminating",
        /// The body is not a JSON object.
        NotAnObject = "NotAnObject",

        // Generic rules.
        LatestGenerationNotObserved = "LatestGenerationNotObserved",
        NoGeneration = "NoGeneration",
        NoObservedGeneration = "NoObservedGeneration",
        /// A `Reconciling` condition is `True`.
        Reconciling = "Reconciling",
        /// A `Stalled` condition is `True`.
        Stalled = "Stalled",
        /// A kind without rules has a `Ready` condition that is not `True`.
        NotReady = "NotReady",

        // Workloads.
        ProgressDeadlineExceeded = "ProgressDeadlineExceeded",
        LessReplicas = "LessReplicas",
        LessUpdated = "LessUpdated",
        LessAvailable = "LessAvailable",
        LessReady = "LessReady",
        LessCurrent = "LessCurrent",
        LessLabelled = "LessLabelled",
        ExtraPods = "ExtraPods",
        ReplicaSetNotAvailable = "ReplicaSetNotAvailable",
        DeploymentNotAvailable = "DeploymentNotAvailable",
        ReplicaFailure = "ReplicaFailure",
        PartitionRollout = "PartitionRollout",
        RevisionMismatch = "RevisionMismatch",
        NoDesiredNumber = "NoDesiredNumber",

        // Pods and jobs.
        PodNotObserved = "PodNotObserved",
        PodPending = "PodPending",
        PodUnschedulable = "PodUnschedulable",
        PodRunningNotReady = "PodRunningNotReady",
        ContainerCrashLooping = "ContainerCrashLooping",
        UnknownPhase = "UnknownPhase",
        JobNotStarted = "JobNotStarted",
        JobFailed = "JobFailed",

        // Services, claims, definitions.
        NoIPAssigned = "NoIPAssigned",
        NoIngress = "NoIngress",
        NotBound = "NotBound",
        NamesNotAccepted = "NamesNotAccepted",
        NotEstablished = "NotEstablished",
        Installing = "Installing",

        // Environments (besides `Current`, and a failed object's own reason).
        /// Some object is not current yet, within the timeout.
        Progressing = "Progressing",
    }
}
